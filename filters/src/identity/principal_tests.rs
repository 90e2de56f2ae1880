//! Identity, the `x-gateway-identity` format and XFCC.

use super::principal::*;
use super::{SpiffeId, VerifiedJwt};
use crate::identity::JwtAlgorithm;
use serde_json::json;

fn jwt(iss: &str, sub: &str, td: &str) -> VerifiedJwt {
    VerifiedJwt {
        issuer: iss.into(),
        subject: sub.into(),
        trust_domain: td.into(),
        algorithm: JwtAlgorithm::ES256,
        kid: None,
        claims: json!({"iss": iss, "sub": sub})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    }
}

const WEB: &str = "spiffe://cluster-b.example/ns/shop/sa/web";
const ISS: &str = "https://issuer.cluster-b.example";

#[test]
fn principals_and_header_values() {
    let peer = SpiffeId::parse(WEB).unwrap();
    let mtls = Identity::from_mtls(peer.clone());
    assert_eq!(
        mtls.header_value(),
        format!(r#"principal="{WEB}";trust_domain="cluster-b.example";method=mtls"#)
    );
    assert_eq!(
        (mtls.principals(), mtls.claims()),
        (vec![WEB.to_string()], None)
    );

    let token = Identity::from_jwt(jwt(ISS, "user-42", "idp.example"));
    assert_eq!(token.principal(), format!("{ISS}#user-42"));
    assert_eq!(
        token.header_value(),
        format!(r#"principal="{ISS}#user-42";trust_domain="idp.example";method=jwt"#)
    );

    let both = Identity::new(Some(peer), Some(jwt(ISS, "user-42", "idp.example"))).unwrap();
    assert_eq!(both.principal(), WEB);
    assert_eq!(both.trust_domains(), ["cluster-b.example", "idp.example"]);
    assert_eq!(both.methods().as_str(), "mtls+jwt");
    let value = both.header_value();
    assert_eq!(
        value,
        format!(
            r#"principal="{WEB}";trust_domain="cluster-b.example";method=mtls+jwt;request_principal="{ISS}#user-42""#
        )
    );
    assert_eq!(IdentityHeader::parse(&value).unwrap(), both.header());
    assert!(Identity::new(None, None).is_none());
}

#[test]
fn header_escaping_round_trips() {
    let nasty = "a\"b\\c;d=e,f%g h\u{e9}\u{1F600}\n";
    let id = Identity::from_jwt(jwt("iss", nasty, "td"));
    let value = id.header_value();
    assert!(value.bytes().all(|b| (0x20..0x7f).contains(&b)), "{value}");
    assert!(
        value.contains(r#"a\"b\\c;d=e,f%25g h%C3%A9%F0%9F%98%80%0A"#),
        "{value}"
    );
    let back = IdentityHeader::parse(&value).unwrap();
    assert_eq!(back.principal, format!("iss#{nasty}"));
    assert_eq!(
        back.methods,
        AuthMethods {
            mtls: false,
            jwt: true
        }
    );

    let extra = r#"principal="p";trust_domain="t";method=mtls;future="x""#;
    assert_eq!(IdentityHeader::parse(extra).unwrap().principal, "p");
    for bad in [
        "",
        r#"principal="p""#,
        r#"principal="p;trust_domain="t";method=mtls"#,
        r#"principal="p";trust_domain="t";method=tls"#,
        r#"principal="p";principal="q";trust_domain="t";method=mtls"#,
        r#"principal="p";trust_domain="t";method=mtls;"#,
        r#"principal="%zz";trust_domain="t";method=mtls"#,
        r#"principal="p"x;trust_domain="t";method=mtls"#,
        "principal=\"\u{e9}\";trust_domain=\"t\";method=mtls",
    ] {
        assert!(IdentityHeader::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn xfcc_in_envoy_format() {
    assert_eq!(
        XfccElement::hash_der(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let peer = SpiffeId::parse(WEB).unwrap();
    let e = XfccElement::for_client(Some("spiffe://cluster-a.example/gateway"), b"abc", &peer);
    assert_eq!(
        e.to_string(),
        format!(
            "By=spiffe://cluster-a.example/gateway;Hash={};URI={WEB}",
            XfccElement::hash_der(b"abc")
        )
    );
    let full = XfccElement {
        subject: Some("CN=web,O=\"Shop\"".into()),
        dns: vec!["web.shop".into()],
        uri: vec!["x;y".into()],
        ..Default::default()
    };
    assert_eq!(
        full.to_string(),
        r#"Subject="CN=web,O=\"Shop\"";URI="x;y";DNS=web.shop"#
    );
}

//! JWT fixtures for the identity tests: signing keys the test makes itself
//! (RSA 2048 generated with aws-lc-rs, ECDSA P-256 with rcgen), JWKS
//! documents, tokens (valid ones and deliberately broken ones), checking a
//! gateway-minted token against a JWKS, and PyJWT (an independent JWT
//! implementation) run through `python3`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Value};

/// Shown when `python3` with PyJWT and cryptography cannot be found.
pub const PYJWT_INSTALL_HINT: &str =
    "the identity tests cross-check tokens with PyJWT: they need python3 \
     with the `jwt` (PyJWT) and `cryptography` modules; run tests/install-deps.sh \
     (installs Debian's python3, python3-jwt and python3-cryptography)";

/// How long one `python3` run may take.
const PYTHON_TIMEOUT: Duration = Duration::from_secs(30);

/// The current time, Unix seconds.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// base64url without padding.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding; panics on bad input.
pub fn unb64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(s)
        .unwrap_or_else(|e| panic!("not base64url ({e}): {s}"))
}

/// A private signing key with its `kid`, algorithm, public JWK and PEMs.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
    private_pem: String,
    public_pem: String,
}

impl SigningKey {
    /// A new RSA 2048 key for RS256 (generated with aws-lc-rs, which is
    /// fast even in debug builds).
    pub fn rsa(kid: &str) -> SigningKey {
        use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
        use rsa::traits::PublicKeyParts;

        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .expect("generate RSA key");
        let pkcs8: Pkcs8V1Der<'static> = pair.as_der().expect("RSA key to PKCS#8");
        let key = rsa::RsaPrivateKey::from_pkcs8_der(pkcs8.as_ref()).expect("parse RSA PKCS#8");
        let pkcs1 = key.to_pkcs1_der().expect("RSA key to PKCS#1");
        let private_pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .expect("RSA key to PEM")
            .to_string();
        let public_pem = key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("RSA public key to PEM");
        SigningKey {
            kid: kid.to_string(),
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_der(pkcs1.as_bytes()),
            jwk: json!({
                "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                "n": b64(&key.n().to_bytes_be()), "e": b64(&key.e().to_bytes_be()),
            }),
            private_pem,
            public_pem,
        }
    }

    /// A new ECDSA P-256 key for ES256.
    pub fn es256(kid: &str) -> SigningKey {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .expect("generate P-256 key");
        let point = pair.public_key_raw();
        assert_eq!(point.len(), 65, "uncompressed P-256 point");
        SigningKey {
            kid: kid.to_string(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(&pair.serialize_der()),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                "x": b64(&point[1..33]), "y": b64(&point[33..]),
            }),
            private_pem: pair.serialize_pem(),
            public_pem: pair.public_key_pem(),
        }
    }

    /// Its `kid`.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Its algorithm (`RS256` or `ES256`).
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// `"RS256"` or `"ES256"`.
    pub fn alg_name(&self) -> &'static str {
        match self.alg {
            Algorithm::RS256 => "RS256",
            Algorithm::ES256 => "ES256",
            other => panic!("unexpected test key algorithm {other:?}"),
        }
    }

    /// The public JWK (with `kid`, `use: sig` and `alg`).
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// The private key, PEM PKCS#8 (for PyJWT, or a gateway `key:` file).
    pub fn private_key_pem(&self) -> &str {
        &self.private_pem
    }

    /// The public key, PEM SubjectPublicKeyInfo.
    pub fn public_key_pem(&self) -> &str {
        &self.public_pem
    }

    /// A token with header `{alg, typ: JWT, kid}` and `claims`.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_kid(claims, Some(&self.kid))
    }

    /// A token signed by this key whose header names `kid` (or none).
    pub fn sign_with_kid(&self, claims: &Value, kid: Option<&str>) -> String {
        let mut header = Header::new(self.alg);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign token")
    }
}

/// A JWKS document (`{"keys": [...]}`) of these keys' public JWKs.
pub fn jwks(keys: &[&SigningKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
}

/// The RFC 7638 thumbprint of a public JWK (EC or RSA): base64url of the
/// SHA-256 of its required members in lexicographic order, no whitespace.
pub fn jwk_thumbprint(jwk: &Value) -> String {
    use sha2::{Digest, Sha256};
    let member = |k: &str| {
        jwk[k]
            .as_str()
            .unwrap_or_else(|| panic!("JWK has no string `{k}`: {jwk}"))
            .to_string()
    };
    let canonical = match member("kty").as_str() {
        "EC" => format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            member("crv"),
            member("x"),
            member("y")
        ),
        "RSA" => format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            member("e"),
            member("n")
        ),
        other => panic!("no thumbprint for kty {other}"),
    };
    b64(&Sha256::digest(canonical.as_bytes()))
}

/// [`jwks`] as JSON text.
pub fn jwks_json(keys: &[&SigningKey]) -> String {
    jwks(keys).to_string()
}

/// Claims valid now: `iss`, `sub`, `aud`, `iat` and `nbf` 10 s ago, `exp`
/// in 5 minutes. Add or change members with `claims["scope"] = ...`.
pub fn claims(iss: &str, sub: &str, aud: &str) -> Value {
    let t = now();
    json!({"iss": iss, "sub": sub, "aud": aud, "iat": t - 10, "nbf": t - 10, "exp": t + 300})
}

/// `alg: none`: an unsigned token (empty signature part).
pub fn unsigned_token(claims: &Value, kid: Option<&str>) -> String {
    let mut header = json!({"alg": "none", "typ": "JWT"});
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    format!(
        "{}.{}.",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// An HS256 token with `secret` as the HMAC key: with the PEM of an RSA
/// public key as the secret and that key's `kid`, the classic
/// algorithm-confusion forgery.
pub fn hs256_token(secret: &[u8], kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).expect("HS256 token")
}

/// `token` with one bit of its signature flipped (same length, still base64url).
pub fn tamper_signature(token: &str) -> String {
    let (signed, sig) = token.rsplit_once('.').expect("a compact JWS");
    let mut bytes = unb64(sig);
    assert!(!bytes.is_empty(), "token has no signature to tamper with");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    format!("{signed}.{}", b64(&bytes))
}

/// `token` with its payload replaced by `claims`, keeping header and
/// signature (a forged claim set).
pub fn replace_payload(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a compact JWS: {token}");
    format!(
        "{}.{}.{}",
        parts[0],
        b64(claims.to_string().as_bytes()),
        parts[2]
    )
}

/// The header and the claims of a compact JWS, not verified.
pub fn decode_unverified(token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a compact JWS: {token}");
    let part = |s: &str| -> Value {
        serde_json::from_slice(&unb64(s))
            .unwrap_or_else(|e| panic!("JWS part is not JSON ({e}): {token}"))
    };
    (part(parts[0]), part(parts[1]))
}

/// Verifies an ES256 `token` with the key of `jwks` its header `kid` names
/// (jsonwebtoken), checking `iss`, `aud`, `exp`, `nbf` (5 s leeway) and
/// that `sub` is present. Returns the claims, or why it failed.
pub fn verify_es256_with_jwks(
    token: &str,
    jwks: &Value,
    issuer: &str,
    audience: &str,
) -> Result<Value, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| format!("bad JWS header: {e}"))?;
    if header.alg != Algorithm::ES256 {
        return Err(format!("alg is {:?}, expected ES256", header.alg));
    }
    let kid = header.kid.ok_or("the token header has no kid")?;
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks.clone())
        .map_err(|e| format!("the JWKS does not parse as a JWK set ({e}): {jwks}"))?;
    let jwk = set
        .find(&kid)
        .ok_or_else(|| format!("no key with kid `{kid}` in the JWKS: {jwks}"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable JWK `{kid}`: {e}"))?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "sub", "aud"]);
    validation.validate_nbf = true;
    validation.leeway = 5;
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|e| format!("does not verify: {e}"))
}

/// The `python3` that has PyJWT and cryptography: Debian's
/// `/usr/bin/python3` first (where python3-jwt installs), then `python3` on
/// `PATH`. Panics with [`PYJWT_INSTALL_HINT`] when neither has them: the
/// cross-check must not be skipped silently.
pub fn pyjwt_python() -> PathBuf {
    static PY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = PY.get_or_init(|| {
        let mut tried = Vec::new();
        for cand in ["/usr/bin/python3", "python3"] {
            let out = Command::new(cand)
                .args([
                    "-c",
                    "import jwt, cryptography; print(jwt.__version__, cryptography.__version__)",
                ])
                .stdin(Stdio::null())
                .output();
            match out {
                Ok(o) if o.status.success() => return Ok(PathBuf::from(cand)),
                Ok(o) => tried.push(format!(
                    "{cand}: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                )),
                Err(e) => tried.push(format!("{cand}: {e}")),
            }
        }
        Err(tried.join("; "))
    });
    match found {
        Ok(p) => p.clone(),
        Err(why) => panic!("{PYJWT_INSTALL_HINT} (tried: {why})"),
    }
}

/// Runs `python3 -c script` with `input` on stdin; its stdout, or stderr as
/// the error. Killed after 30 s.
fn run_python(script: &str, input: &Value) -> Result<String, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = Command::new(pyjwt_python())
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("spawn python3");
    {
        let mut stdin = child.stdin.take().expect("python stdin");
        stdin
            .write_all(input.to_string().as_bytes())
            .expect("write python stdin");
    }
    let deadline = Instant::now() + PYTHON_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for python3") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("python3 did not finish within {PYTHON_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    if status.success() {
        Ok(stdout.trim().to_string())
    } else {
        Err(format!("python3 failed ({status}): {}", stderr.trim()))
    }
}

const PYJWT_SIGN: &str = r#"
import json, sys, jwt
req = json.load(sys.stdin)
with open(req["key_file"]) as f:
    key = f.read()
tok = jwt.encode(req["claims"], key, algorithm=req["alg"], headers={"kid": req["kid"]})
print(tok.decode() if isinstance(tok, bytes) else tok)
"#;

const PYJWT_VERIFY: &str = r#"
import json, sys, jwt
req = json.load(sys.stdin)
token = req["token"]
kid = jwt.get_unverified_header(token).get("kid")
keys = [k for k in jwt.PyJWKSet.from_dict(req["jwks"]).keys if k.key_id == kid]
if not keys:
    sys.exit("no key with kid %r in the JWKS" % (kid,))
claims = jwt.decode(token, keys[0].key, algorithms=[req["alg"]], audience=req["audience"],
                    issuer=req["issuer"], options={"require": ["exp", "iat", "iss", "sub", "aud"]})
print(json.dumps(claims))
"#;

/// Signs `claims` with PyJWT (`jwt.encode`), header `kid`, algorithm `alg`
/// (`RS256`, `ES256`) and the PEM private key in the file `key_file`.
pub fn pyjwt_sign(key_file: &Path, alg: &str, kid: &str, claims: &Value) -> String {
    let input = json!({"key_file": key_file, "alg": alg, "kid": kid, "claims": claims});
    run_python(PYJWT_SIGN, &input).unwrap_or_else(|e| panic!("PyJWT could not sign: {e}"))
}

/// Verifies `token` with PyJWT against `jwks` (`jwt.PyJWKSet`, the key its
/// `kid` names), requiring `alg`, `issuer` and `audience`. Returns the
/// claims or PyJWT's error.
pub fn pyjwt_verify(
    token: &str,
    jwks: &Value,
    alg: &str,
    issuer: &str,
    audience: &str,
) -> Result<Value, String> {
    let input =
        json!({"token": token, "jwks": jwks, "alg": alg, "issuer": issuer, "audience": audience});
    let out = run_python(PYJWT_VERIFY, &input)?;
    serde_json::from_str(&out).map_err(|e| format!("PyJWT printed no JSON ({e}): {out}"))
}

//! Config values written as one string (`100/s`, `10s`, `10.0.0.0/8`,
//! `header:x-user`): read with the type's `FromStr` (whose error is the
//! config error), written with its `Display`, and described in the JSON
//! schema as a string with an optional pattern.

/// Implements `Deserialize`, `Serialize` and `JsonSchema` for a type written
/// as one string, from its `FromStr` and `Display`.
///
/// ```ignore
/// config_string!(Rate, "RateLimitRate", pattern: "^[0-9]+/(s|m|h)$", "A rate such as `100/s`.");
/// ```
#[macro_export]
macro_rules! config_string {
    ($ty:ty, $schema:literal, $(pattern: $pattern:literal,)? $description:literal) => {
        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> ::std::result::Result<Self, D::Error> {
                let s = <String as ::serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(::serde::de::Error::custom)
            }
        }
        impl ::serde::Serialize for $ty {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> ::std::result::Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl ::schemars::JsonSchema for $ty {
            fn schema_name() -> ::std::borrow::Cow<'static, str> {
                $schema.into()
            }
            fn json_schema(_: &mut ::schemars::SchemaGenerator) -> ::schemars::Schema {
                ::schemars::json_schema!({
                    "type": "string",
                    $("pattern": $pattern,)?
                    "description": $description
                })
            }
        }
    };
}

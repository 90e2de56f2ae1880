//! Reading the config's word-valued settings (`lb: round_robin`,
//! `client_auth: require`) so that a wrong value names the accepted ones.
//!
//! serde's derived `Deserialize` for a unit enum, read by serde_yaml,
//! answers a map or a list with "invalid type: map, expected a YAML tag
//! starting with '!'": serde_yaml's internals, useless to an operator who
//! wrote `client_auth: {mode: require}`. [`config_enum!`] implements
//! `Deserialize` from a table of the spellings instead, so every wrong value
//! gets "expected one of `require`, `optional`". The derived `Serialize` and
//! `JsonSchema` stay (they read the enum's `#[serde(rename..)]` attributes);
//! [`config_names_match_serde`] is the unit test that keeps the table and
//! those attributes in step.

use std::fmt;

use serde::de::{self, Visitor};

/// Implements `Deserialize` for a unit enum from a table of its config
/// spellings, and a `CONFIG_NAMES` constant with that table.
///
/// ```ignore
/// config_enum!(ClientAuth { Require = "require", Optional = "optional" });
/// ```
#[macro_export]
macro_rules! config_enum {
    ($ty:ident { $($variant:ident = $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value with its spelling in the config file.
            pub const CONFIG_NAMES: &'static [($ty, &'static str)] = &[$(($ty::$variant, $name)),+];
        }
        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str($crate::config_enum::NameVisitor(Self::CONFIG_NAMES))
            }
        }
    };
}

/// "one of `a`, `b`, `c`": the accepted spellings, for messages.
pub fn one_of<T>(names: &[(T, &'static str)]) -> String {
    let names: Vec<String> = names.iter().map(|(_, n)| format!("`{n}`")).collect();
    format!("one of {}", names.join(", "))
}

/// The value spelled `word`, or an error naming the accepted spellings.
pub fn parse<T: Copy, E: de::Error>(word: &str, names: &[(T, &'static str)]) -> Result<T, E> {
    names
        .iter()
        .find(|(_, name)| *name == word)
        .map(|(value, _)| *value)
        .ok_or_else(|| {
            E::custom(format!(
                "unknown variant `{word}`, expected {}",
                one_of(names)
            ))
        })
}

/// The visitor of the `Deserialize` impl [`config_enum!`] writes: a word
/// from the table.
#[doc(hidden)]
pub struct NameVisitor<T: 'static>(pub &'static [(T, &'static str)]);

impl<T: Copy + 'static> Visitor<'_> for NameVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&one_of(self.0))
    }

    fn visit_str<E: de::Error>(self, word: &str) -> Result<T, E> {
        parse(word, self.0)
    }
}

/// Test helper: every spelling in `T::CONFIG_NAMES` is the one the derived
/// `Serialize` (and so the JSON schema) uses.
pub fn config_names_match_serde<T: serde::Serialize + fmt::Debug>(
    names: &[(T, &'static str)],
) -> Result<(), String> {
    for (value, name) in names {
        let written = serde_json::to_value(value).map_err(|e| e.to_string())?;
        if written != serde_json::Value::String((*name).to_string()) {
            return Err(format!(
                "{value:?} is written {written}, the table says `{name}`"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
    #[serde(rename_all = "snake_case")]
    enum Colour {
        DarkRed,
        Blue,
    }
    config_enum!(Colour {
        DarkRed = "dark_red",
        Blue = "blue"
    });

    #[derive(Debug, serde::Deserialize)]
    struct Paint {
        #[allow(dead_code)]
        colour: Colour,
    }

    fn error_of(yaml: &str) -> String {
        serde_yaml::from_str::<Paint>(yaml).unwrap_err().to_string()
    }

    #[test]
    fn reads_each_spelling() {
        let p: Paint = serde_yaml::from_str("colour: dark_red").unwrap();
        assert_eq!(p.colour, Colour::DarkRed);
        let p: Paint = serde_yaml::from_str("colour: blue").unwrap();
        assert_eq!(p.colour, Colour::Blue);
        config_names_match_serde(Colour::CONFIG_NAMES).unwrap();
    }

    #[test]
    fn a_map_or_a_list_names_the_accepted_values() {
        for yaml in ["colour: {mode: blue}", "colour: [blue]"] {
            let e = error_of(yaml);
            assert!(
                e.contains("expected one of `dark_red`, `blue`") && !e.contains("YAML tag"),
                "{yaml}: {e}"
            );
        }
    }

    #[test]
    fn an_unknown_word_is_named_with_the_accepted_values() {
        let e = error_of("colour: green");
        assert!(
            e.contains("unknown variant `green`, expected one of `dark_red`, `blue`"),
            "{e}"
        );
        let e = error_of("colour: 7");
        assert!(e.contains("expected one of `dark_red`, `blue`"), "{e}");
    }

    #[test]
    fn policy_enum_tables_match_serde() {
        config_names_match_serde(crate::ratelimit::Scope::CONFIG_NAMES).unwrap();
        config_names_match_serde(crate::ratelimit::OnStoreError::CONFIG_NAMES).unwrap();
        config_names_match_serde(crate::authz::JwtRequirement::CONFIG_NAMES).unwrap();
        config_names_match_serde(crate::egress::RuleAction::CONFIG_NAMES).unwrap();
        config_names_match_serde(crate::identity::JwtAlgorithm::CONFIG_NAMES).unwrap();
    }

    #[test]
    fn a_table_out_of_step_with_serde_is_caught() {
        #[derive(Clone, Copy, Debug, serde::Serialize)]
        enum Shape {
            Round,
        }
        let e = config_names_match_serde(&[(Shape::Round, "round")]).unwrap_err();
        assert!(e.contains("`round`"), "{e}");
    }
}

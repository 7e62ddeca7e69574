//! Request parameters from the query string and the request body.
//!
//! Proxmox VE clients send parameters as `application/x-www-form-urlencoded`
//! or as a JSON object. Both end up as one map from name to text value; the
//! endpoints check and convert the values they need.

use std::collections::BTreeMap;

/// The parameters of one request, by name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params {
    values: BTreeMap<String, String>,
}

/// Why a request body could not be read as parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The body's content type is neither form-encoded nor JSON.
    #[error("unsupported content type `{0}`")]
    UnsupportedContentType(String),
    /// The body claims to be JSON but is not valid JSON.
    #[error("invalid JSON body: {0}")]
    InvalidJson(String),
    /// The JSON body is valid but not an object.
    #[error("the JSON body must be an object")]
    JsonNotAnObject,
    /// A JSON parameter is an array or an object, which no endpoint takes yet.
    #[error("parameter `{0}` must be a string, number or boolean")]
    NonScalarValue(String),
    /// The form-encoded body is not UTF-8.
    #[error("the form-encoded body is not valid UTF-8")]
    InvalidUtf8,
}

impl Params {
    /// No parameters.
    pub fn new() -> Self {
        Params::default()
    }

    /// The value of parameter `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Sets parameter `name`, replacing an earlier value.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.values.insert(name.into(), value.into());
    }

    /// The parameters in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Removes parameter `name`, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        self.values.remove(name)
    }

    /// The value of `name` as a number, if given and numeric (validated
    /// parameters are).
    pub fn number<T: std::str::FromStr>(&self, name: &str) -> Option<T> {
        self.get(name).and_then(|v| v.parse().ok())
    }

    /// Whether boolean parameter `name` is given as `1`.
    pub fn flag(&self, name: &str) -> bool {
        self.get(name) == Some("1")
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Parameters from a URL query string (`a=1&b=2`).
    pub fn from_query(query: &str) -> Self {
        let mut params = Params::new();
        params.add_form_encoded(query.as_bytes());
        params
    }

    /// Adds the parameters of a request body, which win over earlier values
    /// of the same name. `content_type` is the request's `Content-Type`
    /// header; a missing one means form encoding.
    pub fn add_body(&mut self, content_type: Option<&str>, body: &[u8]) -> Result<(), BodyError> {
        let media_type = content_type
            .map(|ct| {
                ct.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        match media_type.as_str() {
            "application/json" => self.add_json(body),
            "" | "application/x-www-form-urlencoded" => {
                if std::str::from_utf8(body).is_err() {
                    return Err(BodyError::InvalidUtf8);
                }
                self.add_form_encoded(body);
                Ok(())
            }
            _ if body.iter().all(u8::is_ascii_whitespace) => Ok(()),
            other => Err(BodyError::UnsupportedContentType(other.to_owned())),
        }
    }

    fn add_form_encoded(&mut self, body: &[u8]) {
        for (name, value) in form_urlencoded::parse(body) {
            if !name.is_empty() {
                self.insert(name, value);
            }
        }
    }

    fn add_json(&mut self, body: &[u8]) -> Result<(), BodyError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| BodyError::InvalidJson(e.to_string()))?;
        let serde_json::Value::Object(object) = value else {
            return Err(BodyError::JsonNotAnObject);
        };
        for (name, value) in object {
            let text = match value {
                serde_json::Value::Null => continue,
                serde_json::Value::String(s) => s,
                serde_json::Value::Bool(b) => if b { "1" } else { "0" }.to_owned(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
                    return Err(BodyError::NonScalarValue(name));
                }
            };
            self.insert(name, text);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_body_is_decoded() {
        let mut params = Params::new();
        params
            .add_body(
                Some("application/x-www-form-urlencoded"),
                b"username=root%40pam&password=s%3Acr+t%26x&realm=pam",
            )
            .unwrap();
        assert_eq!(params.get("username"), Some("root@pam"));
        assert_eq!(params.get("password"), Some("s:cr t&x"));
        assert_eq!(params.get("realm"), Some("pam"));
        assert_eq!(params.get("otp"), None);
    }

    #[test]
    fn form_body_with_charset_and_no_content_type() {
        let mut params = Params::new();
        params
            .add_body(
                Some("application/x-www-form-urlencoded; charset=UTF-8"),
                b"a=1",
            )
            .unwrap();
        params.add_body(None, b"b=2").unwrap();
        assert_eq!(params.get("a"), Some("1"));
        assert_eq!(params.get("b"), Some("2"));
    }

    #[test]
    fn form_body_must_be_utf8() {
        let mut params = Params::new();
        assert_eq!(
            params.add_body(None, b"a=\xff"),
            Err(BodyError::InvalidUtf8)
        );
    }

    #[test]
    fn json_body_is_decoded() {
        let mut params = Params::new();
        params
            .add_body(
                Some("application/json"),
                br#"{"username":"root@pam","password":"p:w\"d","otp":null,"n":5,"flag":true}"#,
            )
            .unwrap();
        assert_eq!(params.get("username"), Some("root@pam"));
        assert_eq!(params.get("password"), Some("p:w\"d"));
        assert_eq!(params.get("otp"), None);
        assert_eq!(params.get("n"), Some("5"));
        assert_eq!(params.get("flag"), Some("1"));
    }

    #[test]
    fn empty_json_body_is_no_parameters() {
        let mut params = Params::new();
        params
            .add_body(Some("application/json; charset=utf-8"), b"  \n")
            .unwrap();
        assert!(params.is_empty());
    }

    #[test]
    fn bad_json_bodies_are_refused() {
        let mut params = Params::new();
        assert!(matches!(
            params.add_body(Some("application/json"), b"{\"a\":"),
            Err(BodyError::InvalidJson(_))
        ));
        assert_eq!(
            params.add_body(Some("application/json"), b"[1,2]"),
            Err(BodyError::JsonNotAnObject)
        );
        assert_eq!(
            params.add_body(Some("application/json"), br#"{"a":[1]}"#),
            Err(BodyError::NonScalarValue("a".into()))
        );
    }

    #[test]
    fn unknown_content_type_is_refused_unless_empty() {
        let mut params = Params::new();
        assert_eq!(
            params.add_body(Some("text/plain"), b"hello"),
            Err(BodyError::UnsupportedContentType("text/plain".into()))
        );
        params.add_body(Some("text/plain"), b"").unwrap();
    }

    #[test]
    fn body_wins_over_query() {
        let mut params = Params::from_query("a=1&b=2");
        params.add_body(None, b"b=3").unwrap();
        assert_eq!(params.get("a"), Some("1"));
        assert_eq!(params.get("b"), Some("3"));
    }
}

//! The awsQuery protocol (STS, ELBv2): form-encoded parameters in, XML out.

use std::collections::BTreeMap;

/// Decoded form parameters of an awsQuery request (`Action`, `Version`, and
/// flattened members such as `Names.member.1`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct QueryParams(pub BTreeMap<String, String>);

impl QueryParams {
    /// Parses an `application/x-www-form-urlencoded` body.
    pub fn parse(body: &[u8]) -> Self {
        QueryParams(form_urlencoded::parse(body).into_owned().collect())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The operation name.
    pub fn action(&self) -> Option<&str> {
        self.get("Action")
    }
}

/// Escapes text for an XML element body or attribute.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A successful awsQuery response: `<{action}Response><{action}Result>..`.
/// `result_xml` must already be escaped.
pub fn success(action: &str, namespace: &str, result_xml: &str, request_id: &str) -> String {
    format!(
        "<{action}Response xmlns=\"{namespace}\"><{action}Result>{result_xml}</{action}Result>\
         <ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></{action}Response>",
        escape(request_id)
    )
}

/// An awsQuery error response. `sender` is true for client faults.
pub fn error(namespace: &str, code: &str, message: &str, sender: bool, request_id: &str) -> String {
    let kind = if sender { "Sender" } else { "Receiver" };
    format!(
        "<ErrorResponse xmlns=\"{namespace}\"><Error><Type>{kind}</Type><Code>{}</Code>\
         <Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
        escape(code),
        escape(message),
        escape(request_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_decodes_form_members() {
        let p =
            QueryParams::parse(b"Action=GetCallerIdentity&Version=2011-06-15&Names.member.1=a%20b");
        assert_eq!(p.action(), Some("GetCallerIdentity"));
        assert_eq!(p.get("Names.member.1"), Some("a b"));
        assert_eq!(p.get("Missing"), None);
    }

    #[test]
    fn escape_covers_markup() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&apos;x&apos;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }

    #[test]
    fn error_is_sender_or_receiver() {
        let x = error("ns", "Bad", "m<", true, "r");
        assert!(x.contains("<Type>Sender</Type><Code>Bad</Code><Message>m&lt;</Message>"));
        assert!(error("ns", "Bad", "m", false, "r").contains("Receiver"));
    }
}

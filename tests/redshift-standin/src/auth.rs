//! The SigV4 `Authorization` header: its shape is checked, its signature is not (the stand-in
//! knows no secret keys). What it proves is that the client signs every request for the
//! `redshift-data` service with the access key it was given.

use crate::protocol::ApiError;

/// What a well-formed `Authorization` header names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedBy {
    pub access_key_id: String,
    pub region: String,
}

/// Parses `AWS4-HMAC-SHA256 Credential=<key>/<yyyymmdd>/<region>/redshift-data/aws4_request,
/// SignedHeaders=<a;b;…>, Signature=<64 hex digits>`.
pub fn check(header: Option<&str>, amz_date: Option<&str>) -> Result<SignedBy, ApiError> {
    let Some(header) = header else {
        return Err(ApiError::new(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        ));
    };
    let incomplete = |what: &str| {
        ApiError::new(
            "IncompleteSignatureException",
            format!("Authorization header is not a valid SigV4 signature: {what}"),
        )
    };
    let rest = header
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| incomplete("the algorithm must be AWS4-HMAC-SHA256"))?;
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',') {
        let (key, value) = part
            .trim()
            .split_once('=')
            .ok_or_else(|| incomplete("expected key=value pairs"))?;
        match key {
            "Credential" => credential = Some(value),
            "SignedHeaders" => signed_headers = Some(value),
            "Signature" => signature = Some(value),
            other => return Err(incomplete(&format!("unknown element '{other}'"))),
        }
    }
    let credential = credential.ok_or_else(|| incomplete("no Credential"))?;
    let signed_headers = signed_headers.ok_or_else(|| incomplete("no SignedHeaders"))?;
    let signature = signature.ok_or_else(|| incomplete("no Signature"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [key, date, region, service, terminator] = scope[..] else {
        return Err(incomplete(
            "Credential must be <key>/<date>/<region>/<service>/aws4_request",
        ));
    };
    if key.is_empty() || date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(incomplete("bad access key or date in Credential"));
    }
    if service != "redshift-data" || terminator != "aws4_request" {
        return Err(incomplete(&format!(
            "the credential scope is for '{service}', not redshift-data"
        )));
    }
    if region.is_empty() {
        return Err(incomplete("no region in Credential"));
    }
    let headers: Vec<&str> = signed_headers.split(';').collect();
    if !headers.contains(&"host") || !headers.contains(&"x-amz-date") {
        return Err(incomplete("SignedHeaders must include host and x-amz-date"));
    }
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(incomplete("Signature must be 64 hex digits"));
    }
    match amz_date {
        Some(d) if d.len() == 16 && d.starts_with(date) && d.ends_with('Z') => {}
        _ => {
            return Err(incomplete(
                "X-Amz-Date is missing or does not match the scope",
            ))
        }
    }
    Ok(SignedBy {
        access_key_id: key.to_owned(),
        region: region.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240102/us-east-1/redshift-data/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7";

    #[test]
    fn a_sdk_shaped_header_names_its_key_and_region() {
        let who = check(Some(GOOD), Some("20240102T030405Z")).unwrap();
        assert_eq!(who.access_key_id, "AKIDEXAMPLE");
        assert_eq!(who.region, "us-east-1");
    }

    #[test]
    fn missing_or_malformed_headers_are_refused() {
        assert_eq!(
            check(None, None).unwrap_err().kind,
            "MissingAuthenticationTokenException"
        );
        for bad in [
            GOOD.replace("AWS4-HMAC-SHA256", "AWS3"),
            GOOD.replace("redshift-data", "s3"),
            GOOD.replace("Signature=5d", "Signature=zz"),
            GOOD.replace("host;", ""),
        ] {
            let e = check(Some(&bad), Some("20240102T030405Z")).unwrap_err();
            assert_eq!(e.kind, "IncompleteSignatureException", "{bad}");
        }
        let e = check(Some(GOOD), Some("20250102T030405Z")).unwrap_err();
        assert!(e.message.contains("X-Amz-Date"), "{}", e.message);
    }
}

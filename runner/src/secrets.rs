//! Credentials from AWS Secrets Manager (by ARN or name), or from environment variables that
//! ECS fills from Secrets Manager. Secret values are wrapped in [`Secret`], whose `Debug` and
//! `Display` print `***`, so they never reach a log line.

use serde::Deserialize;

/// A secret string. Only [`Secret::expose`] gives the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The value, for the one place that needs it (the client configuration).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// SASL PLAIN/SCRAM credentials.
#[derive(Debug, Clone)]
pub struct SaslCredentials {
    /// The user.
    pub username: String,
    /// The password.
    pub password: Secret,
}

/// Why credentials could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Secrets Manager refused or failed (the message names the secret, never its value).
    #[error("secret {secret}: {reason}")]
    Fetch {
        /// ARN or name.
        secret: String,
        /// What went wrong.
        reason: String,
    },
    /// The secret is not in the expected shape.
    #[error("secret {secret}: {reason}")]
    Shape {
        /// ARN or name.
        secret: String,
        /// What is expected.
        reason: String,
    },
    /// Neither a secret nor the environment variables are configured.
    #[error("{0}")]
    Missing(String),
}

#[derive(Deserialize)]
struct UserPass {
    username: String,
    password: String,
}

/// Reads a secret's string value.
pub async fn fetch(sdk: &aws_config::SdkConfig, secret: &str) -> Result<Secret, SecretError> {
    let client = aws_sdk_secretsmanager::Client::new(sdk);
    let out = client
        .get_secret_value()
        .secret_id(secret)
        .send()
        .await
        .map_err(|e| SecretError::Fetch {
            secret: secret.to_owned(),
            reason: aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string(),
        })?;
    out.secret_string()
        .map(|s| Secret::new(s.to_owned()))
        .ok_or_else(|| SecretError::Shape {
            secret: secret.to_owned(),
            reason: "has no string value (binary secrets are not supported)".into(),
        })
}

/// Parses `{"username": ..., "password": ...}`, the shape MSK SCRAM secrets have.
pub fn parse_user_pass(secret: &str, value: &Secret) -> Result<SaslCredentials, SecretError> {
    let parsed: UserPass =
        serde_json::from_str(value.expose()).map_err(|_| SecretError::Shape {
            secret: secret.to_owned(),
            reason: "expected a JSON object with string fields \"username\" and \"password\""
                .into(),
        })?;
    Ok(SaslCredentials {
        username: parsed.username,
        password: Secret::new(parsed.password),
    })
}

/// PLAIN/SCRAM credentials: from the secret when one is configured, otherwise from
/// `KAFKA_SASL_USERNAME` / `KAFKA_SASL_PASSWORD`.
pub async fn sasl_credentials(
    sdk: &aws_config::SdkConfig,
    secret_arn: Option<&str>,
) -> Result<SaslCredentials, SecretError> {
    match secret_arn {
        Some(arn) => parse_user_pass(arn, &fetch(sdk, arn).await?),
        None => {
            let user = std::env::var("KAFKA_SASL_USERNAME")
                .ok()
                .filter(|v| !v.is_empty());
            let pass = std::env::var("KAFKA_SASL_PASSWORD")
                .ok()
                .filter(|v| !v.is_empty());
            match (user, pass) {
                (Some(username), Some(password)) => Ok(SaslCredentials {
                    username,
                    password: Secret::new(password),
                }),
                _ => Err(SecretError::Missing(
                    "runner.kafka.security: PLAIN and SCRAM need `secret_arn`, or the \
                     KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD environment variables"
                        .into(),
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_pass_parses_and_never_prints() {
        let c = parse_user_pass(
            "arn:x",
            &Secret::new(r#"{"username":"bronze","password":"s3cr3t"}"#.into()),
        )
        .unwrap();
        assert_eq!(c.username, "bronze");
        assert_eq!(c.password.expose(), "s3cr3t");
        assert!(!format!("{c:?}").contains("s3cr3t"));
        let e = parse_user_pass("arn:x", &Secret::new("s3cr3t".into())).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("secret arn:x: expected a JSON object")
        );
        assert!(!e.to_string().contains("s3cr3t"));
    }
}

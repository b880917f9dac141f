//! Service-account tokens: JWTs signed with `--service-account-signing-key-file`, verified
//! with its public key and those in `--service-account-key-file`.
//!
//! Mirrors upstream's `serviceaccount` token generator and authenticator for bound tokens
//! (TokenRequest, `kubectl create token`): claims `iss`, `sub`, `aud`, `exp`, `iat`, `nbf`,
//! `jti` and `kubernetes.io` (namespace and service account name and uid); a token
//! authenticates as `system:serviceaccount:<ns>:<name>` in `system:serviceaccounts` and
//! `system:serviceaccounts:<ns>` only while that service account still exists with that uid.
//! RS256 (RSA keys, kubeadm's `sa.key`) and ES256 (P-256 keys). Leaves out legacy secret-based
//! tokens, tokens bound to pods or secrets, and the OIDC discovery endpoints.

use std::path::{Path, PathBuf};

use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair, UnparsedPublicKey};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, SubjectPublicKeyInfoDer};
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum SaKeyError {
    #[error("reading service-account key {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path}: not an RSA or P-256 ECDSA private key ({why})")]
    Unsupported { path: PathBuf, why: String },
    #[error("signing a token")]
    Sign,
}

enum Signing {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// A public key that may have signed a token.
struct Verify {
    alg: &'static str,
    /// RSA: the PKCS#1 RSAPublicKey; EC: the uncompressed point.
    key: Vec<u8>,
}

pub struct ServiceAccountTokens {
    signer: Option<(Signing, String)>,
    keys: Vec<Verify>,
    pub issuer: String,
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn kid(public: &[u8]) -> String {
    b64(ring::digest::digest(&ring::digest::SHA256, public).as_ref())
}

fn load_signing(path: &Path) -> Result<Signing, SaKeyError> {
    let der = PrivateKeyDer::from_pem_file(path).map_err(|source| SaKeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let unsupported = |why: String| SaKeyError::Unsupported {
        path: path.to_owned(),
        why,
    };
    match &der {
        PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der())
            .map(Signing::Rsa)
            .map_err(|e| unsupported(e.to_string())),
        PrivateKeyDer::Pkcs8(k) => {
            let bytes = k.secret_pkcs8_der();
            if let Ok(rsa) = RsaKeyPair::from_pkcs8(bytes) {
                return Ok(Signing::Rsa(rsa));
            }
            EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                bytes,
                &SystemRandom::new(),
            )
            .map(Signing::Ec)
            .map_err(|e| unsupported(e.to_string()))
        }
        _ => Err(unsupported("SEC1 keys: convert to PKCS#8".into())),
    }
}

/// Public keys from PEM `PUBLIC KEY` blocks (an SPKI): RSA or P-256.
fn load_public(path: &Path) -> Result<Vec<Verify>, SaKeyError> {
    let spkis = SubjectPublicKeyInfoDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| SaKeyError::Read {
            path: path.to_owned(),
            source,
        })?;
    let mut out = Vec::new();
    for spki in spkis {
        let Ok((_, info)) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki.as_ref()) else {
            continue;
        };
        let oid = info.algorithm.algorithm.to_id_string();
        let alg = match oid.as_str() {
            "1.2.840.113549.1.1.1" => "RS256",
            "1.2.840.10045.2.1" => "ES256",
            _ => continue,
        };
        out.push(Verify {
            alg,
            key: info.subject_public_key.data.to_vec(),
        });
    }
    Ok(out)
}

use x509_parser::prelude::FromDer;

impl ServiceAccountTokens {
    /// Keys from the flags; `None` when neither flag is set.
    pub fn load(
        signing: Option<&Path>,
        public: &[PathBuf],
        issuer: &str,
    ) -> Result<Option<ServiceAccountTokens>, SaKeyError> {
        if signing.is_none() && public.is_empty() {
            return Ok(None);
        }
        let mut keys = Vec::new();
        let signer = match signing {
            Some(p) => {
                let s = load_signing(p)?;
                let (alg, public) = match &s {
                    Signing::Rsa(k) => ("RS256", k.public().as_ref().to_vec()),
                    Signing::Ec(k) => ("ES256", k.public_key().as_ref().to_vec()),
                };
                let id = kid(&public);
                keys.push(Verify { alg, key: public });
                Some((s, id))
            }
            None => None,
        };
        for p in public {
            keys.extend(load_public(p)?);
        }
        Ok(Some(ServiceAccountTokens {
            signer,
            keys,
            issuer: issuer.to_owned(),
        }))
    }

    pub fn can_sign(&self) -> bool {
        self.signer.is_some()
    }

    /// Signs a token for a service account, valid for `seconds`.
    pub fn issue(
        &self,
        ns: &str,
        name: &str,
        uid: &str,
        audiences: &[String],
        seconds: i64,
    ) -> Result<(String, i64), SaKeyError> {
        let (signer, kid) = self.signer.as_ref().ok_or(SaKeyError::Sign)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let exp = now + seconds;
        let alg = match signer {
            Signing::Rsa(_) => "RS256",
            Signing::Ec(_) => "ES256",
        };
        let header = json!({"alg": alg, "kid": kid});
        let claims = json!({
            "aud": audiences, "exp": exp, "iat": now, "nbf": now, "iss": self.issuer,
            "jti": super::rest::uuid(),
            "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": name, "uid": uid}},
            "sub": format!("system:serviceaccount:{ns}:{name}"),
        });
        let input = format!(
            "{}.{}",
            b64(&serde_json::to_vec(&header).unwrap_or_default()),
            b64(&serde_json::to_vec(&claims).unwrap_or_default())
        );
        let rng = SystemRandom::new();
        let sig = match signer {
            Signing::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &rng,
                    input.as_bytes(),
                    &mut sig,
                )
                .map_err(|_| SaKeyError::Sign)?;
                sig
            }
            Signing::Ec(k) => k
                .sign(&rng, input.as_bytes())
                .map_err(|_| SaKeyError::Sign)?
                .as_ref()
                .to_vec(),
        };
        Ok((format!("{input}.{}", b64(&sig)), exp))
    }

    /// Checks a token's signature, issuer, audience and lifetime; returns its claims.
    pub fn verify(&self, token: &str) -> Result<Value, String> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a JWT".into());
        };
        let dec = |x: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(x)
                .map_err(|e| e.to_string())
        };
        let header: Value = serde_json::from_slice(&dec(h)?).map_err(|e| e.to_string())?;
        let sig = dec(s)?;
        let input = format!("{h}.{c}");
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let ok = self.keys.iter().filter(|k| k.alg == alg).any(|k| {
            let algorithm: &dyn signature::VerificationAlgorithm = match k.alg {
                "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                _ => &signature::ECDSA_P256_SHA256_FIXED,
            };
            UnparsedPublicKey::new(algorithm, &k.key)
                .verify(input.as_bytes(), &sig)
                .is_ok()
        });
        if !ok {
            return Err("invalid signature".into());
        }
        let claims: Value = serde_json::from_slice(&dec(c)?).map_err(|e| e.to_string())?;
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err("wrong issuer".into());
        }
        let aud_ok = claims
            .get("aud")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(self.issuer.as_str())));
        if !aud_ok {
            return Err("token audiences do not include the API server's".into());
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        if now > exp {
            return Err("token has expired".into());
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_ec() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let path = dir.path().join("sa.key");
        std::fs::write(&path, key.serialize_pem()).unwrap();
        let pub_path = dir.path().join("sa.pub");
        std::fs::write(&pub_path, key.public_key_pem()).unwrap();
        let iss = "https://kubernetes.default.svc.cluster.local";
        let t = ServiceAccountTokens::load(Some(&path), std::slice::from_ref(&pub_path), iss)
            .unwrap()
            .unwrap();
        let (tok, _) = t
            .issue("default", "robot", "u1", &[iss.into()], 600)
            .unwrap();
        let claims = t.verify(&tok).unwrap();
        assert_eq!(claims["sub"], "system:serviceaccount:default:robot");
        assert!(t.verify(&format!("{tok}x")).is_err());
        let (other_aud, _) = t
            .issue("default", "robot", "u1", &["elsewhere".into()], 600)
            .unwrap();
        assert!(t.verify(&other_aud).is_err());
        // A verifier holding only the public key accepts the token too.
        let v = ServiceAccountTokens::load(None, &[pub_path], iss)
            .unwrap()
            .unwrap();
        assert!(v.verify(&tok).is_ok());
        assert!(!v.can_sign());
    }
}

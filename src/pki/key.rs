//! Private keys in the three PEM encodings kubeconfigs carry (PKCS#1 `RSA PRIVATE KEY`,
//! SEC1 `EC PRIVATE KEY`, PKCS#8 `PRIVATE KEY`), read far enough to find their public half.

use rustls_pki_types::pem::SectionKind;
use x509_parser::der_parser::ber::{BerObject, BerObjectContent};
use x509_parser::der_parser::der::parse_der;
use x509_parser::public_key::PublicKey;

/// The public half of a private key, in the form a certificate's SubjectPublicKeyInfo holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Public {
    Rsa {
        modulus: Vec<u8>,
        exponent: Vec<u8>,
    },
    /// The raw public key bytes: an EC point or an Ed25519 key.
    Raw(Vec<u8>),
    /// An EC key written without its public point: cannot be compared.
    Unknown,
}

/// A private key reduced to what matching needs: its algorithm and public half.
#[derive(Debug, Clone)]
pub struct PrivateKey {
    pub kind: &'static str,
    public: Public,
}

type KeyResult<T> = Result<T, (&'static str, String)>;

fn der<'a>(bytes: &'a [u8], format: &'static str) -> KeyResult<BerObject<'a>> {
    parse_der(bytes)
        .map(|(_, o)| o)
        .map_err(|e| (format, e.to_string()))
}

fn seq<'a>(o: &'a BerObject<'a>, format: &'static str) -> KeyResult<&'a Vec<BerObject<'a>>> {
    o.as_sequence().map_err(|e| (format, e.to_string()))
}

fn unsigned(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().skip_while(|b| **b == 0).copied().collect()
}

fn rsa_public(pkcs1: &[u8]) -> KeyResult<Public> {
    const F: &str = "PKCS#1";
    let o = der(pkcs1, F)?;
    let items = seq(&o, F)?;
    let int = |i: usize| -> KeyResult<Vec<u8>> {
        let item = items.get(i).ok_or((F, format!("missing field {i}")))?;
        item.as_slice()
            .map(unsigned)
            .map_err(|e| (F, e.to_string()))
    };
    Ok(Public::Rsa {
        modulus: int(1)?,
        exponent: int(2)?,
    })
}

/// SEC1 `ECPrivateKey`: the public point is the optional `[1]` BIT STRING.
fn ec_public(sec1: &[u8]) -> KeyResult<Public> {
    const F: &str = "SEC1";
    let o = der(sec1, F)?;
    for item in seq(&o, F)? {
        if item.header.tag().0 == 1 && item.header.class() as u8 == 2 {
            let inner = match &item.content {
                BerObjectContent::Unknown(any) => any.data,
                _ => continue,
            };
            let bits = der(inner, F)?;
            if let BerObjectContent::BitString(_, b) = &bits.content {
                return Ok(Public::Raw(b.data.to_vec()));
            }
        }
    }
    Ok(Public::Unknown)
}

fn ed25519_public(seed_octets: &[u8]) -> KeyResult<Public> {
    const F: &str = "Ed25519";
    let o = der(seed_octets, F)?;
    let seed = o.as_slice().map_err(|e| (F, e.to_string()))?;
    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(seed)
        .map_err(|e| (F, e.to_string()))?;
    use ring::signature::KeyPair as _;
    Ok(Public::Raw(pair.public_key().as_ref().to_vec()))
}

impl PrivateKey {
    pub(super) fn from_der(kind: SectionKind, bytes: &[u8]) -> KeyResult<Self> {
        match kind {
            SectionKind::RsaPrivateKey => Ok(PrivateKey {
                kind: "RSA",
                public: rsa_public(bytes)?,
            }),
            SectionKind::EcPrivateKey => Ok(PrivateKey {
                kind: "ECDSA",
                public: ec_public(bytes)?,
            }),
            _ => Self::from_pkcs8(bytes),
        }
    }

    fn from_pkcs8(bytes: &[u8]) -> KeyResult<Self> {
        const F: &str = "PKCS#8";
        let o = der(bytes, F)?;
        let items = seq(&o, F)?;
        let algorithm = items
            .get(1)
            .and_then(|a| a.as_sequence().ok())
            .and_then(|a| a.first())
            .and_then(|oid| oid.as_oid().ok())
            .map(|oid| oid.to_id_string())
            .ok_or((F, "no algorithm identifier".to_string()))?;
        let inner = items
            .get(2)
            .and_then(|k| k.as_slice().ok())
            .ok_or((F, "no private key octets".to_string()))?;
        match algorithm.as_str() {
            "1.2.840.113549.1.1.1" => Ok(PrivateKey {
                kind: "RSA",
                public: rsa_public(inner)?,
            }),
            "1.2.840.10045.2.1" => Ok(PrivateKey {
                kind: "ECDSA",
                public: ec_public(inner)?,
            }),
            "1.3.101.112" => Ok(PrivateKey {
                kind: "Ed25519",
                public: ed25519_public(inner)?,
            }),
            other => Err((F, format!("unsupported key algorithm {other}"))),
        }
    }

    /// `Some(true)` if this key is the private half of the given public key, `None` if the key
    /// does not carry enough to tell.
    pub(super) fn matches(&self, spki_bits: &[u8], parsed: Option<&PublicKey<'_>>) -> Option<bool> {
        match (&self.public, parsed) {
            (Public::Rsa { modulus, exponent }, Some(PublicKey::RSA(rsa))) => {
                Some(*modulus == unsigned(rsa.modulus) && *exponent == unsigned(rsa.exponent))
            }
            (Public::Rsa { .. }, _) => Some(false),
            (Public::Raw(bytes), _) => Some(bytes.as_slice() == spki_bits),
            (Public::Unknown, _) => None,
        }
    }
}

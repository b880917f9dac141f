//! A throwaway PKI for tests and `klab bench api`: a CA, a serving certificate for loopback,
//! client certificates, and a kubeconfig naming them.
//!
//! Shaped like kubeadm's (`ca.crt`, `apiserver.crt` with IP SANs and serverAuth, client
//! certificates with CN = user, O = group and clientAuth), all v3 with extensions because
//! kube-rs and rustls refuse v1 certificates. Not for real clusters: keys are written
//! unencrypted and nothing rotates.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

#[derive(Debug, thiserror::Error)]
pub enum DevPkiError {
    #[error("generating the certificate for {who}")]
    Generate {
        who: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A client identity: user name and groups.
pub struct Client<'a> {
    pub user: &'a str,
    pub groups: &'a [&'a str],
}

/// The file name (without extension) of a user's certificate and key: the user name with `:`
/// replaced by `-` (`system:node:n1` → `system-node-n1`), since curl's `--cert` splits at `:`.
pub fn file_stem(user: &str) -> String {
    user.replace(':', "-")
}

fn write(path: PathBuf, data: &str) -> Result<(), DevPkiError> {
    std::fs::write(&path, data).map_err(|source| DevPkiError::Write { path, source })
}

fn ca(cn: &str) -> Result<(CertificateParams, KeyPair, String), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let pem = p.self_signed(&key)?.pem();
    Ok((p, key, pem))
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    cn: &str,
    orgs: &[&str],
    sans: Vec<String>,
    usage: ExtendedKeyUsagePurpose,
) -> Result<(String, String), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(sans)?;
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    for o in orgs {
        p.distinguished_name.push(DnType::OrganizationName, *o);
    }
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![usage];
    Ok((p.signed_by(&key, issuer)?.pem(), key.serialize_pem()))
}

/// Writes `ca.crt`, `apiserver.crt/.key` (for 127.0.0.1 and localhost), `<user>.crt/.key` for
/// each client, and `stranger.crt/.key` signed by a CA the server does not trust.
pub fn write_pki(dir: &Path, clients: &[Client]) -> Result<(), DevPkiError> {
    let gen_err = |who: &str| {
        let who = who.to_owned();
        move |source| DevPkiError::Generate { who, source }
    };
    let (ca_params, ca_key, ca_pem) = ca("klab-ca").map_err(gen_err("ca"))?;
    write(dir.join("ca.crt"), &ca_pem)?;
    // The signing key too, as kubeadm keeps /etc/kubernetes/pki/ca.key: labs sign with it.
    write(dir.join("ca.key"), &ca_key.serialize_pem())?;
    let issuer = Issuer::new(ca_params, ca_key);
    let (crt, key) = leaf(
        &issuer,
        "kube-apiserver",
        &[],
        vec!["127.0.0.1".into(), "localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    )
    .map_err(gen_err("apiserver"))?;
    write(dir.join("apiserver.crt"), &crt)?;
    write(dir.join("apiserver.key"), &key)?;
    for c in clients {
        let (crt, key) = leaf(
            &issuer,
            c.user,
            c.groups,
            vec![],
            ExtendedKeyUsagePurpose::ClientAuth,
        )
        .map_err(gen_err(c.user))?;
        write(dir.join(format!("{}.crt", file_stem(c.user))), &crt)?;
        write(dir.join(format!("{}.key", file_stem(c.user))), &key)?;
    }
    let (other_params, other_key, _) = ca("someone-else").map_err(gen_err("stranger ca"))?;
    let other = Issuer::new(other_params, other_key);
    let (crt, key) = leaf(
        &other,
        "stranger",
        &["system:masters"],
        vec![],
        ExtendedKeyUsagePurpose::ClientAuth,
    )
    .map_err(gen_err("stranger"))?;
    write(dir.join("stranger.crt"), &crt)?;
    write(dir.join("stranger.key"), &key)?;
    Ok(())
}

/// Writes `dir/kubeconfig` with one context per user (the first is current), all pointing at
/// `server` and trusting `dir/ca.crt`.
pub fn write_kubeconfig(dir: &Path, server: &str, users: &[&str]) -> Result<PathBuf, DevPkiError> {
    let d = dir.display();
    let mut s = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: klab\n  cluster:\n    server: {server}\n    certificate-authority: {d}/ca.crt\nusers:\n"
    );
    for u in users {
        let f = file_stem(u);
        s.push_str(&format!(
            "- name: {u}\n  user:\n    client-certificate: {d}/{f}.crt\n    client-key: {d}/{f}.key\n"
        ));
    }
    s.push_str("contexts:\n");
    for u in users {
        s.push_str(&format!(
            "- name: {u}\n  context:\n    cluster: klab\n    user: {u}\n"
        ));
    }
    s.push_str(&format!(
        "current-context: {}\n",
        users.first().copied().unwrap_or("admin")
    ));
    let path = dir.join("kubeconfig");
    write(path.clone(), &s)?;
    Ok(path)
}

//! Test certificates made with rcgen, written to a temporary directory.

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

/// A CA, a server certificate for localhost/127.0.0.1 signed by it, and
/// client certificates from a client CA and from an unrelated CA.
pub struct Pki {
    dir: tempfile::TempDir,
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    (p.self_signed(&key).unwrap(), key)
}

fn leaf(sans: &[&str], usage: ExtendedKeyUsagePurpose, issuer: &(rcgen::Certificate, KeyPair)) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, sans[0]);
    p.extended_key_usages = vec![usage];
    (p.signed_by(&key, &issuer.0, &issuer.1).unwrap().pem(), key.serialize_pem())
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let w = |name: &str, pem: &str| std::fs::write(dir.path().join(name), pem).unwrap();
        let server_ca = ca("ksense test server CA");
        let client_ca = ca("ksense test client CA");
        let other_ca = ca("some other CA");
        w("ca.crt", &server_ca.0.pem());
        w("client-ca.crt", &client_ca.0.pem());
        w("other-ca.crt", &other_ca.0.pem());
        let (c, k) = leaf(&["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth, &server_ca);
        w("server.crt", &c);
        w("server.key", &k);
        let (c, k) = leaf(&["prometheus"], ExtendedKeyUsagePurpose::ClientAuth, &client_ca);
        w("client.crt", &c);
        w("client.key", &k);
        let (c, k) = leaf(&["intruder"], ExtendedKeyUsagePurpose::ClientAuth, &other_ca);
        w("intruder.crt", &c);
        w("intruder.key", &k);
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }
}

//! The ACME state directory (`--acme-state-dir`): the account's credentials
//! (one per CA directory), the certificate chain and its key, each written with
//! [`crate::state_file::write_private`].

use std::fs;
use std::path::{Path, PathBuf};

use instant_acme::AccountCredentials;

use super::AcmeError;

const CHAIN: &str = "certificate.pem";
const KEY: &str = "key.pem";
const NAMES: &str = "names.txt";

/// The state directory.
pub struct Store {
    dir: PathBuf,
}

/// A certificate kept in the store: its chain and key as PEM, and the names it
/// was ordered for.
pub struct Stored {
    pub chain: String,
    pub key: String,
    pub names: Vec<String>,
}

impl Store {
    /// The store in `dir`, created (mode 0700) if missing.
    pub fn open(dir: &Path) -> Result<Store, AcmeError> {
        crate::state_file::private_dir(dir).map_err(|source| AcmeError::State {
            path: dir.to_owned(),
            source,
        })?;
        Ok(Store {
            dir: dir.to_owned(),
        })
    }

    /// Where the certificate chain is kept.
    pub fn chain_path(&self) -> PathBuf {
        self.dir.join(CHAIN)
    }

    /// Where the certificate's key is kept.
    pub fn key_path(&self) -> PathBuf {
        self.dir.join(KEY)
    }

    /// The credentials of the account made with the CA at `directory`, if one
    /// was. Accounts are kept per directory: credentials carry their CA's
    /// URLs, so a changed `--acme-directory` must not reuse another CA's.
    pub fn account(&self, directory: &str) -> Result<Option<AccountCredentials>, AcmeError> {
        let name = account_file(directory);
        match self.read(&name)? {
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| AcmeError::Corrupt {
                    path: self.dir.join(&name),
                    why: e.to_string(),
                }),
            None => Ok(None),
        }
    }

    /// Keeps the credentials of the account made with the CA at `directory`.
    pub fn save_account(
        &self,
        directory: &str,
        credentials: &AccountCredentials,
    ) -> Result<(), AcmeError> {
        let name = account_file(directory);
        let text = serde_json::to_string_pretty(credentials).map_err(|e| AcmeError::Corrupt {
            path: self.dir.join(&name),
            why: e.to_string(),
        })?;
        self.write(&name, text.as_bytes())
    }

    /// The certificate kept, if there is one.
    pub fn certificate(&self) -> Result<Option<Stored>, AcmeError> {
        let (Some(chain), Some(key), Some(names)) =
            (self.read(CHAIN)?, self.read(KEY)?, self.read(NAMES)?)
        else {
            return Ok(None);
        };
        Ok(Some(Stored {
            chain,
            key,
            names: names.lines().map(str::to_owned).collect(),
        }))
    }

    /// Keeps a certificate: the key first, then the names, then the chain, so a
    /// chain on disk always has its key and names beside it.
    pub fn save_certificate(&self, stored: &Stored) -> Result<(), AcmeError> {
        self.write(KEY, stored.key.as_bytes())?;
        self.write(NAMES, stored.names.join("\n").as_bytes())?;
        self.write(CHAIN, stored.chain.as_bytes())
    }

    fn read(&self, name: &str) -> Result<Option<String>, AcmeError> {
        let path = self.dir.join(name);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(AcmeError::State { path, source }),
        }
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), AcmeError> {
        let path = self.dir.join(name);
        crate::state_file::write_private(&path, bytes)
            .map_err(|source| AcmeError::State { path, source })
    }
}

/// `account-` and the first 8 bytes of the directory URL's SHA-256, in hex.
fn account_file(directory: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(directory.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("account-{hex}.json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_are_private_and_read_back() {
        let dir = std::env::temp_dir().join(format!("anytls-acme-store-{}", std::process::id()));
        let store = Store::open(&dir).unwrap();
        assert!(store.certificate().unwrap().is_none());
        assert!(store.account("https://ca.test/dir").unwrap().is_none());
        assert_ne!(account_file("https://a/dir"), account_file("https://b/dir"));
        let stored = Stored {
            chain: "chain".into(),
            key: "key".into(),
            names: vec!["a.test".into(), "b.test".into()],
        };
        store.save_certificate(&stored).unwrap();
        let back = store.certificate().unwrap().unwrap();
        assert_eq!((back.chain.as_str(), back.key.as_str()), ("chain", "key"));
        assert_eq!(back.names, stored.names);
        for name in [CHAIN, KEY, NAMES] {
            let mode = fs::metadata(dir.join(name)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        assert!(fs::read_dir(&dir).unwrap().all(|entry| !entry
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".new")));
        fs::remove_dir_all(dir).unwrap();
    }
}

//! The controller's identity in the database, each written once by whichever controller
//! comes first and read back by all: the controller CA (`controller_ca`), the controller
//! UUID (`controller_config`), and the bootstrap admin's password hash (`credential`),
//! whose password only the winning controller knows (written 0600 beside controller.conf).
//!
//! Every write is a guarded insert (it does nothing when the row exists), so a second
//! writer's insert is harmless; whatever the error (including an outcome-unknown commit),
//! the writer re-reads rather than resends, and the row read back is the truth.

use std::path::Path;

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use dqlite::client::Client;
use dqlite::wire::Value;

use crate::ca::{self, Ca};
use crate::schema::DATABASE;

/// The bootstrap administrator's user name.
pub const ADMIN: &str = "admin";

/// The file, beside controller.conf, that holds the bootstrap admin password.
pub const ADMIN_PASSWORD_FILE: &str = "admin-password";

/// The `controller_config` key of the controller's UUID.
pub const CONTROLLER_UUID: &str = "controller-uuid";

fn text(value: Option<&Value>) -> Option<String> {
    match value {
        Some(Value::Text(text)) => Some(text.clone()),
        _ => None,
    }
}

async fn first_row(
    client: &mut Client,
    sql: &str,
    params: &[Value],
) -> anyhow::Result<Option<Vec<Value>>> {
    Ok(client
        .query(DATABASE, sql, params)
        .await?
        .rows
        .into_iter()
        .next())
}

/// Sends a guarded insert; an error is only logged, since the read that follows decides.
async fn offer(client: &mut Client, what: &str, sql: &str, params: &[Value]) {
    if let Err(e) = client.exec(DATABASE, sql, params).await {
        log::warn!("offering the {what} failed ({e}); reading what is there");
    }
}

/// The controller CA: the database's, offered first from `dir` (or made new) if the
/// database has none; saved into `dir` when it differs from what was there.
pub async fn ensure_ca(client: &mut Client, dir: &Path, controller_id: &str) -> anyhow::Result<Ca> {
    let read = "SELECT cert_pem, key_pem FROM controller_ca WHERE id = 1";
    let local = Ca::load(dir)?;
    if first_row(client, read, &[]).await?.is_none() {
        let offered = match &local {
            Some(ca) => ca.clone(),
            None => Ca::generate()?,
        };
        offer(
            client,
            "controller CA",
            "INSERT INTO controller_ca (id, cert_pem, key_pem, created_by)
             SELECT 1, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM controller_ca)",
            &[
                Value::Text(offered.cert_pem),
                Value::Text(offered.key_pem),
                Value::Text(controller_id.to_owned()),
            ],
        )
        .await;
    }
    let row = first_row(client, read, &[])
        .await?
        .ok_or_else(|| anyhow::anyhow!("no controller CA in the database after offering one"))?;
    let ca = match (text(row.first()), text(row.get(1))) {
        (Some(cert_pem), Some(key_pem)) => Ca { cert_pem, key_pem },
        _ => anyhow::bail!("the controller_ca row is not two texts"),
    };
    if local.as_ref() != Some(&ca) {
        if local.is_some() {
            log::warn!("the local CA differs from the controller database's: using the database's");
        }
        ca.save(dir)?;
    }
    Ok(ca)
}

/// A random version-4 UUID.
pub fn new_uuid() -> String {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The controller's UUID, made by the first controller to ask.
pub async fn ensure_controller_uuid(client: &mut Client) -> anyhow::Result<String> {
    offer(
        client,
        "controller UUID",
        "INSERT OR IGNORE INTO controller_config (key, value) VALUES (?, ?)",
        &[Value::Text(CONTROLLER_UUID.into()), Value::Text(new_uuid())],
    )
    .await;
    let row = first_row(
        client,
        "SELECT value FROM controller_config WHERE key = ?",
        &[Value::Text(CONTROLLER_UUID.into())],
    )
    .await?;
    text(row.as_ref().and_then(|r| r.first()))
        .ok_or_else(|| anyhow::anyhow!("no controller UUID in the database after offering one"))
}

/// An Argon2id PHC string for `password` with a fresh random salt.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| anyhow::anyhow!("cannot hash a password: {e}"))
}

/// Whether `password` matches the PHC string `hash` (false for an unreadable hash too).
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A random password: 32 characters of lower-case hex (128 bits).
pub fn new_password() -> String {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The stored password hash of `name` (a user name or an agent tag).
pub async fn password_hash(client: &mut Client, name: &str) -> anyhow::Result<Option<String>> {
    let row = first_row(
        client,
        "SELECT password_hash FROM credential WHERE name = ?",
        &[Value::Text(name.to_owned())],
    )
    .await?;
    Ok(text(row.as_ref().and_then(|r| r.first())))
}

/// Makes sure agent `name` (a unit's tag) logs in with `password`: stores its hash unless
/// the stored one already verifies it. What Juju's deployer does when it sets a new unit
/// agent's password; here the controller agent does it for the units on its own machine,
/// whose `agent.conf` it can read (it is that machine's root). Returns whether it wrote.
/// An error (an unknown outcome included) is the caller's to try again.
pub async fn ensure_agent_credential(
    client: &mut Client,
    name: &str,
    password: &str,
) -> anyhow::Result<bool> {
    if let Some(hash) = password_hash(client, name).await? {
        let password = password.to_owned();
        if tokio::task::spawn_blocking(move || verify_password(&password, &hash)).await? {
            return Ok(false);
        }
    }
    let owned = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || hash_password(&owned)).await??;
    client
        .exec(
            DATABASE,
            "INSERT OR REPLACE INTO credential (name, password_hash) VALUES (?, ?)",
            &[Value::Text(name.to_owned()), Value::Text(hash)],
        )
        .await?;
    Ok(true)
}

/// Makes the bootstrap admin if there is none: the password goes into `dir` (0600) first,
/// its hash into the database; a controller whose hash lost the race removes its file.
/// Returns whether this call made the admin.
pub async fn ensure_admin(client: &mut Client, dir: &Path) -> anyhow::Result<bool> {
    if password_hash(client, ADMIN).await?.is_some() {
        return Ok(false);
    }
    let password = new_password();
    let hash = tokio::task::spawn_blocking(move || hash_password(&password).map(|h| (password, h)))
        .await??;
    let (password, hash) = hash;
    let file = dir.join(ADMIN_PASSWORD_FILE);
    ca::write_file(&file, format!("{password}\n").as_bytes(), 0o600)?;
    offer(
        client,
        "admin credential",
        "INSERT OR IGNORE INTO credential (name, password_hash) VALUES (?, ?)",
        &[Value::Text(ADMIN.into()), Value::Text(hash.clone())],
    )
    .await;
    let stored = password_hash(client, ADMIN).await?;
    if stored.as_deref() == Some(hash.as_str()) {
        log::info!(
            "made the bootstrap admin; its password is in {}",
            file.display()
        );
        Ok(true)
    } else {
        let _ = std::fs::remove_file(&file);
        match stored {
            Some(_) => Ok(false),
            None => anyhow::bail!("no admin credential in the database after offering one"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_own_hash() {
        let hash = hash_password("s3cret").expect("hash");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("s3cret", &hash));
        assert!(!verify_password("s3cret ", &hash));
        assert!(!verify_password("", &hash));
        assert!(!verify_password("s3cret", "not a phc string"));
        // Salted: the same password hashes differently each time.
        assert_ne!(hash, hash_password("s3cret").expect("hash"));
    }

    #[test]
    fn uuids_and_passwords_are_well_formed_and_fresh() {
        let uuid = new_uuid();
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "4", "{uuid}");
        assert!(matches!(&uuid[19..20], "8" | "9" | "a" | "b"), "{uuid}");
        assert_ne!(uuid, new_uuid());
        let password = new_password();
        assert_eq!(password.len(), 32);
        assert_ne!(password, new_password());
    }
}

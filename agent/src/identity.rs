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
    let hex = hex(&bytes);
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

/// An Argon2id PHC string for `password` with a fresh random salt: for people's passwords,
/// which may be guessable, so every guess must cost (about 20-40 ms of CPU and 19 MiB here).
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| anyhow::anyhow!("cannot hash a password: {e}"))
}

/// The prefix of an agent secret's hash: `$hmac-sha256$<salt hex>$<tag hex>`.
const AGENT_HASH_PREFIX: &str = "$hmac-sha256$";

/// The shortest password taken as an agent's random secret: Juju's agent passwords are 18
/// random bytes in base64 (24 characters), ours 16 random bytes in hex (32).
pub const AGENT_SECRET_MIN_LEN: usize = 24;

/// Whether `name` is an agent's tag (a machine, unit or controller agent), whose password
/// is a random secret the controller or the deployer made, never a person's choice.
pub fn is_agent_tag(name: &str) -> bool {
    ["machine-", "unit-", "controller-"].iter().any(|prefix| {
        name.strip_prefix(prefix)
            .is_some_and(|rest| !rest.is_empty())
    })
}

/// The hash to store for `name`'s `password`. An agent's secret of at least
/// [`AGENT_SECRET_MIN_LEN`] characters gets a salted HMAC-SHA256, as Juju hashes agent
/// passwords with a fast salted hash: a 128-bit random secret cannot be guessed whatever
/// the hash costs, and after a controller restart every agent of the model logs in again
/// at once (Argon2 made that 20-40 ms of CPU per agent, and each of the seven trackers of
/// an `enable-ha -n 7` paid it twice). Anything else gets Argon2id.
pub fn hash_credential(name: &str, password: &str) -> anyhow::Result<String> {
    if fast_hash_applies(name, password) {
        let mut salt = [0u8; 16];
        OsRng.fill_bytes(&mut salt);
        Ok(agent_hash(&salt, password))
    } else {
        hash_password(password)
    }
}

/// Whether [`hash_credential`] gives `name`'s `password` the agents' HMAC. Pure.
fn fast_hash_applies(name: &str, password: &str) -> bool {
    is_agent_tag(name) && password.len() >= AGENT_SECRET_MIN_LEN
}

/// `$hmac-sha256$<salt hex>$<HMAC-SHA256(key = salt, password) hex>`. Pure.
fn agent_hash(salt: &[u8], password: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, salt);
    let tag = ring::hmac::sign(&key, password.as_bytes());
    format!("{AGENT_HASH_PREFIX}{}${}", hex(salt), hex(tag.as_ref()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

/// Whether `password` matches the stored `hash`: an agent secret's HMAC (compared in
/// constant time by ring) or an Argon2id PHC string. False for an unreadable hash.
pub fn verify_password(password: &str, hash: &str) -> bool {
    if let Some(rest) = hash.strip_prefix(AGENT_HASH_PREFIX) {
        let Some((salt, tag)) = rest.split_once('$') else {
            return false;
        };
        let (Some(salt), Some(tag)) = (unhex(salt), unhex(tag)) else {
            return false;
        };
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &salt);
        return ring::hmac::verify(&key, password.as_bytes(), &tag).is_ok();
    }
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A stored hash for a name nobody has, checked when a login names no credential, so that
/// the answer takes as long as a wrong password for a name of the same kind would: an
/// agent's HMAC for an agent tag, Argon2id for anything else. (Which tags exist is no
/// secret from timing, as in Juju; which user names exist is.)
pub fn unknown_name_hash(name: &str) -> &'static str {
    if is_agent_tag(name) {
        "$hmac-sha256$736f6d6573616c74736f6d6573616c74$\
         0000000000000000000000000000000000000000000000000000000000000000"
    } else {
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Kn+6B0Xr7Y0T3eS9Hj7qz3y2Ww8cN2b3kq0eH9oP0aE"
    }
}

/// A random password: 32 characters of lower-case hex (128 bits).
pub fn new_password() -> String {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    hex(&bytes)
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
        // A hash of the scheme this secret would get now (an older Argon2id one of an
        // agent's secret is replaced by the cheaper HMAC, once).
        let current = hash.starts_with(AGENT_HASH_PREFIX) == fast_hash_applies(name, password);
        let password = password.to_owned();
        if current && tokio::task::spawn_blocking(move || verify_password(&password, &hash)).await?
        {
            return Ok(false);
        }
    }
    let (owned, tag) = (password.to_owned(), name.to_owned());
    let hash = tokio::task::spawn_blocking(move || hash_credential(&tag, &owned)).await??;
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
    fn agent_secrets_get_a_salted_hmac_and_verify_only_against_it() {
        let secret = new_password();
        let hash = hash_credential("unit-my-app-3", &secret).expect("hash");
        assert!(hash.starts_with("$hmac-sha256$"), "{hash}");
        assert!(verify_password(&secret, &hash));
        assert!(!verify_password(&format!("{secret} "), &hash));
        assert!(!verify_password(&secret[1..], &hash));
        assert!(!verify_password("", &hash));
        // Salted: the same secret hashes differently each time, and both verify.
        let again = hash_credential("unit-my-app-3", &secret).expect("hash");
        assert_ne!(hash, again);
        assert!(verify_password(&secret, &again));
        // A tampered tag or salt, or a cut hash, verifies nothing.
        let tampered = format!("{}0", &hash[..hash.len() - 1]);
        let tampered = if tampered == hash {
            format!("{}1", &hash[..hash.len() - 1])
        } else {
            tampered
        };
        assert!(!verify_password(&secret, &tampered));
        assert!(!verify_password(&secret, &hash[..hash.len() - 2]));
        assert!(!verify_password(&secret, "$hmac-sha256$zz$00"));
        assert!(!verify_password(&secret, "$hmac-sha256$"));
    }

    #[test]
    fn only_long_secrets_of_agent_tags_get_the_fast_hash() {
        let secret = new_password();
        for name in ["machine-0", "unit-controller-2", "controller-1"] {
            let hash = hash_credential(name, &secret).expect("hash");
            assert!(hash.starts_with("$hmac-sha256$"), "{name}: {hash}");
        }
        // People's names, a tag without its number, and an agent's short password keep
        // Argon2id.
        for (name, password) in [
            ("admin", secret.as_str()),
            ("machine-", secret.as_str()),
            ("unit-my-app-3", "short-password"),
        ] {
            let hash = hash_credential(name, password).expect("hash");
            assert!(hash.starts_with("$argon2id$"), "{name}: {hash}");
            assert!(verify_password(password, &hash));
        }
    }

    #[test]
    fn unknown_names_are_checked_against_a_hash_of_their_own_kind_that_nothing_verifies() {
        for (name, prefix) in [("machine-9", "$hmac-sha256$"), ("bob", "$argon2id$")] {
            let hash = unknown_name_hash(name);
            assert!(hash.starts_with(prefix), "{name}: {hash}");
            for guess in ["", "admin", &new_password()] {
                assert!(!verify_password(guess, hash), "{name}: {guess:?} verified");
            }
        }
        assert!(argon2::password_hash::PasswordHash::new(unknown_name_hash("bob")).is_ok());
        // Well formed, so that checking it costs what checking a real agent hash costs.
        let agent = unknown_name_hash("unit-a-1");
        let rest = agent.strip_prefix(AGENT_HASH_PREFIX).expect("prefix");
        let (salt, tag) = rest.split_once('$').expect("two fields");
        assert_eq!(unhex(salt).map(|s| s.len()), Some(16));
        assert_eq!(unhex(tag).map(|t| t.len()), Some(32));
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

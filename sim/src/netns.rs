//! The simulated cloud's network, made of Linux network namespaces with `ip`: one "cloud"
//! namespace per model holding a bridge per space, and one namespace per machine with a veth
//! per NIC plugged into its space's bridge. Nothing is added to the root namespace, so no
//! route leads from the host into a model's subnets and models may reuse subnets.

use std::path::Path;
use std::process::Command;

use crate::world::{Nic, Space, World};

/// Where `cleanup` finds which model dir made which namespace prefix.
pub const REGISTRY_DIR: &str = "/run/juju-sim";

/// A failed `ip` command, with its stderr.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot run ip {args}: {source}")]
    Spawn {
        args: String,
        source: std::io::Error,
    },
    #[error("ip {args} failed: {stderr}")]
    Failed { args: String, stderr: String },
}

/// Runs `ip <args>`.
fn ip(args: &[&str]) -> Result<String, NetError> {
    let joined = args.join(" ");
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| NetError::Spawn {
            args: joined.clone(),
            source,
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(NetError::Failed {
            args: joined,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Creates namespace `name` with its loopback up (a stale one of that name is replaced).
fn add_namespace(name: &str) -> Result<(), NetError> {
    if namespace_exists(name) {
        delete_namespace(name)?;
    }
    ip(&["netns", "add", name])?;
    ip(&["-n", name, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Whether namespace `name` exists.
pub fn namespace_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Deletes namespace `name` (its interfaces go with it); a missing one is fine.
pub fn delete_namespace(name: &str) -> Result<(), NetError> {
    if !namespace_exists(name) {
        return Ok(());
    }
    ip(&["netns", "delete", name]).map(drop)
}

/// Every namespace whose name starts with `jsim-`.
pub fn list_sim_namespaces() -> Result<Vec<String>, NetError> {
    let listing = ip(&["netns", "list"])?;
    Ok(listing
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with("jsim-"))
        .map(str::to_owned)
        .collect())
}

/// The pids of the processes living in namespace `name`.
pub fn namespace_pids(name: &str) -> Vec<u32> {
    ip(&["netns", "pids", name])
        .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Creates the model's cloud namespace with one bridge per space.
pub fn create_cloud(world: &World) -> Result<(), NetError> {
    add_namespace(&world.net_namespace())?;
    for space in world.spaces.values() {
        add_bridge(world, space)?;
    }
    Ok(())
}

/// Adds `space`'s bridge to the cloud namespace, holding the subnet's first host address so
/// that the CLI's database client (run in that namespace) reaches every node.
pub fn add_bridge(world: &World, space: &Space) -> Result<(), NetError> {
    let net = world.net_namespace();
    ip(&["-n", &net, "link", "add", &space.bridge, "type", "bridge"])?;
    let gateway = format!("{}/{}", space.gateway(), space.prefix);
    add_address(&net, &gateway, &space.bridge, space.gateway().is_ipv6())?;
    ip(&["-n", &net, "link", "set", &space.bridge, "up"])?;
    Ok(())
}

/// Creates the client namespace (a stale one is replaced) with `eth0` in the default
/// space: a veth whose cloud end `cl0` is on the default space's bridge. Its only route is
/// that subnet, so the client reaches the controllers' default-space addresses and nothing
/// through the host.
pub fn create_client(world: &World) -> Result<(), NetError> {
    let net = world.net_namespace();
    let client = world.client_namespace();
    let space = world
        .spaces
        .get(&world.default_space)
        .ok_or_else(|| NetError::Failed {
            args: "link add cl0".into(),
            stderr: format!(
                "the default space {} is not in the model",
                world.default_space
            ),
        })?;
    add_namespace(&client)?;
    ip(&[
        "-n", &net, "link", "add", "cl0", "type", "veth", "peer", "name", "eth0", "netns", &client,
    ])?;
    ip(&["-n", &net, "link", "set", "cl0", "master", &space.bridge])?;
    ip(&["-n", &net, "link", "set", "cl0", "up"])?;
    let address = space.client_address();
    let cidr = format!("{address}/{}", space.prefix);
    add_address(&client, &cidr, "eth0", address.is_ipv6())?;
    ip(&["-n", &client, "link", "set", "eth0", "up"])?;
    Ok(())
}

/// Cuts machine `id` off the cloud (`isolated`: its NICs' cloud ends go down) or plugs it
/// back in. Its processes keep running: a partition, not a crash.
pub fn set_isolated(world: &World, id: u32, isolated: bool) -> Result<(), NetError> {
    let net = world.net_namespace();
    let state = if isolated { "down" } else { "up" };
    if let Some(machine) = world.machines.get(&id) {
        for nic in &machine.nics {
            let index = nic.name.trim_start_matches("eth");
            ip(&["-n", &net, "link", "set", &format!("m{id}e{index}"), state])?;
        }
    }
    Ok(())
}

/// Adds `address` (with its prefix) to `device` in namespace `namespace`. An IPv6 address
/// skips duplicate address detection (`nodad`): the model's addresses are unique by
/// construction, and a tentative address (for the 1-2 s DAD takes) cannot be bound, so a
/// dbaccessor started at once would fail to listen.
fn add_address(namespace: &str, address: &str, device: &str, ipv6: bool) -> Result<(), NetError> {
    let mut args = vec!["-n", namespace, "addr", "add", address, "dev", device];
    if ipv6 {
        args.push("nodad");
    }
    ip(&args).map(drop)
}

/// Creates machine `id`'s namespace with every NIC the world gives it.
pub fn create_machine(world: &World, id: u32) -> Result<(), NetError> {
    add_namespace(&world.machine_namespace(id))?;
    if let Some(machine) = world.machines.get(&id) {
        for nic in &machine.nics {
            add_nic(world, id, nic)?;
        }
    }
    Ok(())
}

/// Plugs `nic` of machine `id` into its space's bridge: a veth pair whose cloud end is
/// `m<id>e<n>` and whose machine end is the NIC's name, with its address, up.
pub fn add_nic(world: &World, id: u32, nic: &Nic) -> Result<(), NetError> {
    let net = world.net_namespace();
    let machine_ns = world.machine_namespace(id);
    let Some(space) = world.spaces.get(&nic.space) else {
        return Err(NetError::Failed {
            args: format!("link add for {}", nic.name),
            stderr: format!("space {} is not in the model", nic.space),
        });
    };
    let index = nic.name.trim_start_matches("eth");
    let cloud_end = format!("m{id}e{index}");
    ip(&[
        "-n",
        &net,
        "link",
        "add",
        &cloud_end,
        "type",
        "veth",
        "peer",
        "name",
        &nic.name,
        "netns",
        &machine_ns,
    ])?;
    ip(&[
        "-n",
        &net,
        "link",
        "set",
        &cloud_end,
        "master",
        &space.bridge,
    ])?;
    ip(&["-n", &net, "link", "set", &cloud_end, "up"])?;
    let address = format!("{}/{}", nic.address, space.prefix);
    add_address(&machine_ns, &address, &nic.name, nic.address.is_ipv6())?;
    ip(&[
        "-n",
        &machine_ns,
        "link",
        "set",
        "dev",
        &nic.name,
        "address",
        &nic.mac,
    ])?;
    ip(&["-n", &machine_ns, "link", "set", &nic.name, "up"])?;
    Ok(())
}

/// Records that namespaces `jsim-<prefix>-*` belong to the model in `model_dir`.
pub fn register(prefix: &str, model_dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(REGISTRY_DIR)?;
    std::fs::write(
        Path::new(REGISTRY_DIR).join(prefix),
        model_dir.display().to_string(),
    )
}

/// Forgets the model of `prefix`.
pub fn unregister(prefix: &str) {
    // Already gone is the wanted end state.
    let _ = std::fs::remove_file(Path::new(REGISTRY_DIR).join(prefix));
}

/// The model dir that registered `prefix`, if any.
pub fn registered_model(prefix: &str) -> Option<String> {
    std::fs::read_to_string(Path::new(REGISTRY_DIR).join(prefix)).ok()
}

/// The prefix of a simulator namespace name (`jsim-abc123-m0` -> `abc123`).
pub fn prefix_of(namespace: &str) -> Option<&str> {
    namespace.strip_prefix("jsim-")?.split('-').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_of_table() {
        let check = |name: &str, expected: Option<&str>| assert_eq!(prefix_of(name), expected);
        check("jsim-abc123-m0", Some("abc123"));
        check("jsim-abc123-net", Some("abc123"));
        check("other-abc123", None);
    }
}

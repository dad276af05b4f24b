//! `bind-candidates`: the address choice, every address with its scope and why it was kept
//! or dropped, and the command that fixes an ambiguity.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{Outcome, Results};
use crate::address::{self, Choice};
use crate::event::HookEnv;
use crate::hook::{self, HookError};
use crate::memo::Memo;
use crate::tools::HookTools;

pub(super) fn run(tools: &HookTools, env: &HookEnv) -> Result<Outcome, HookError> {
    let (config, choice, read) = hook::observe_address(tools, env, &Memo::new())?;
    let choice = match (config, choice) {
        (Err(error), _) => return Ok((Results::new(), Some(format!("invalid config: {error}")))),
        (_, Some(Err(error))) => return Ok((Results::new(), Some(error.to_string()))),
        (_, Some(Ok(choice))) => choice,
        // observe_address always chooses when the config is valid.
        (Ok(_), None) => return Ok((Results::new(), Some("no address choice was made".into()))),
    };
    // The subnets serve the suggested fix; they come from the network-get output the choice
    // was made from (kept in what observe_address read), not from a second call.
    let subnets = read
        .network
        .as_deref()
        .and_then(|text| address::parse_binding(text).ok())
        .map(|binding| binding.subnets)
        .unwrap_or_default();
    Ok((describe_choice(&choice, &subnets, env.application()), None))
}

/// The action results for an address choice: the verdict, every address with its scope and
/// reason, and the commands that fix an ambiguity or an empty choice.
pub fn describe_choice(
    choice: &Choice,
    subnets: &BTreeMap<String, String>,
    application: &str,
) -> Results {
    let mut results = Results::new();
    let (result, candidates) = match choice {
        Choice::Unique { address, .. } => ("unique", vec![*address]),
        Choice::Ambiguous { candidates, .. } => ("ambiguous", candidates.clone()),
        Choice::None { .. } => ("none", vec![]),
    };
    results.insert("result".into(), result.into());
    if let Some(address) = choice.address() {
        results.insert("address".into(), address.to_string());
    }
    let listed: Vec<String> = candidates.iter().map(ToString::to_string).collect();
    results.insert("candidates".into(), listed.join(" "));
    let dropped: Vec<String> = choice.dropped().iter().map(ToString::to_string).collect();
    results.insert("dropped".into(), dropped.join("; "));

    let mut entries: Vec<(String, String, &str, String)> = vec![];
    for ip in &candidates {
        let reason = match choice {
            Choice::Unique { .. } => "the only candidate in the best tier",
            _ => "a candidate in the best tier, as good as the others",
        };
        entries.push((
            ip.to_string(),
            address::scope(*ip).to_string(),
            "kept",
            reason.into(),
        ));
    }
    for dropped in choice.dropped() {
        let scope = dropped.address.parse::<IpAddr>().map_or_else(
            |_| "none (not an IP)".to_owned(),
            |ip| address::scope(ip).to_string(),
        );
        entries.push((
            dropped.address.clone(),
            scope,
            "dropped",
            dropped.reason.to_string(),
        ));
    }
    for (n, (address, scope, verdict, reason)) in entries.into_iter().enumerate() {
        let key = |field: &str| format!("addresses.{n}.{field}");
        if let Some(subnet) = subnets.get(&address) {
            results.insert(key("subnet"), subnet.clone());
        }
        results.insert(key("address"), address);
        results.insert(key("scope"), scope);
        results.insert(key("verdict"), verdict.into());
        results.insert(key("reason"), reason);
    }

    let subnet_of = |ip: &IpAddr| subnets.get(&ip.to_string()).cloned();
    let fix = match choice {
        Choice::Unique { .. } => "nothing to fix".to_owned(),
        Choice::Ambiguous { candidates, .. } => {
            let example = candidates
                .iter()
                .find_map(subnet_of)
                .unwrap_or_else(|| "<cidr of the network to use>".into());
            format!(
                "juju bind {application} db-cluster=<space of the network to use> \
                 (or, without spaces: juju config {application} bind-cidr={example})"
            )
        }
        Choice::None { .. } => format!(
            "juju bind {application} db-cluster=<a space this machine has a cloud-local address \
             in>, and check bind-cidr and address-family (juju config {application})"
        ),
    };
    results.insert("fix".into(), fix);
    results
}

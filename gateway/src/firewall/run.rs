//! Running `nft`: a batch on stdin, nft's own message on failure, and a time
//! limit, because a hung `nft` (a netlink stall during namespace teardown
//! has been seen) must not hold a reload or a start forever.

use std::{
    borrow::Cow,
    io::Write,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nftables::{
    schema::{NfCmd, NfListObject, NfObject, Nftables, Table},
    types::NfFamily,
};

use super::NftError;

/// How long one `nft` run may take. A 10,000-rule ruleset applies in about
/// 100 ms, but a netlink stall while the kernel tears down network
/// namespaces has held nft for 19 s; a run this long is stuck.
pub const NFT_TIMEOUT: Duration = Duration::from_secs(45);

/// Runs nft, in `netns` when given (tests), else in our own namespace.
#[derive(Clone, Debug, Default)]
pub struct Nft {
    pub netns: Option<String>,
}

impl Nft {
    /// `nft -j [extra] -f -` with the batch on stdin; nft's own message on
    /// failure.
    fn run(&self, ruleset: &Nftables, extra: &[&str]) -> Result<(), NftError> {
        let json = serde_json::to_string(ruleset).map_err(|e| NftError::Encode(e.to_string()))?;
        let mut cmd = match &self.netns {
            None => Command::new("nft"),
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "nft"]);
                c
            }
        };
        cmd.args(extra)
            .args(["-j", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => NftError::NotFound {
                program: if self.netns.is_some() { "ip" } else { "nft" },
            },
            _ => NftError::Spawn(e),
        })?;
        // nft may exit before reading all of its input (it refused
        // something early): its own message then says why, not the pipe.
        let written = child
            .stdin
            .take()
            .map_or(Ok(()), |mut stdin| stdin.write_all(json.as_bytes()));
        let (success, stderr) = wait_limited(child, NFT_TIMEOUT)?;
        if let Err(e) = written
            && stderr.trim().is_empty()
        {
            return Err(NftError::Spawn(e));
        }
        if success {
            return Ok(());
        }
        // `ip netns exec` reports a missing nft itself.
        if stderr.contains("exec of \"nft\" failed") {
            return Err(NftError::NotFound { program: "nft" });
        }
        let mut lines: Vec<&str> = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        lines.dedup();
        Err(NftError::Rejected(lines.join("; ")))
    }

    /// Replaces our table(s), in one transaction.
    pub fn apply(&self, ruleset: &Nftables) -> Result<(), NftError> {
        self.run(ruleset, &[])
    }

    /// Has the kernel validate the ruleset; changes nothing.
    pub fn check(&self, ruleset: &Nftables) -> Result<(), NftError> {
        self.run(ruleset, &["--check"])
    }

    /// Deletes our tables in both families (a boot ruleset written before
    /// the mode was known may have left either); absent tables are fine.
    pub fn remove(&self, table: &str) -> Result<(), NftError> {
        let mut objects = Vec::new();
        for family in [NfFamily::INet, NfFamily::Bridge] {
            let t = || {
                NfListObject::Table(Table {
                    family,
                    name: Cow::Owned(table.to_string()),
                    handle: None,
                })
            };
            objects.push(NfObject::CmdObject(NfCmd::Add(t())));
            objects.push(NfObject::CmdObject(NfCmd::Delete(t())));
        }
        self.apply(&Nftables {
            objects: Cow::Owned(objects),
        })
    }
}

/// Waits for `child` at most `limit`, reading its stderr meanwhile (a full
/// pipe would stall it); kills it when the time is up.
fn wait_limited(mut child: Child, limit: Duration) -> Result<(bool, String), NftError> {
    let stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut s) = stderr {
            let _ = std::io::Read::read_to_string(&mut s, &mut text);
        }
        text
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait().map_err(NftError::Spawn)? {
            Some(status) => break status,
            None if started.elapsed() >= limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(NftError::Timeout(limit));
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let text = reader.join().unwrap_or_default();
    Ok((status.success(), text))
}

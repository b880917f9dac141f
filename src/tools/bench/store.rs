//! `klab bench store`: klab-store beside etcd.

use std::io::Write;

use crate::cli::BenchStoreArgs;

pub fn run(_args: BenchStoreArgs, _out: &mut dyn Write) -> anyhow::Result<()> {
    anyhow::bail!("klab bench store is being built")
}

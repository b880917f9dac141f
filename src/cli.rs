//! Command-line definitions (clap derive) and the multi-call argv mapping; no logic lives here.
//!
//! Flag names follow the upstream tools a learner already knows: `--kubeconfig` and
//! `--context` as kubectl, `-o json|yaml` as kubectl, `--pki-dir` as `kubeadm certs`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The links klab answers to, each naming the subcommand that runs that component.
///
/// Started as `kube-apiserver --secure-port=6443`, klab behaves as
/// `klab apiserver --secure-port=6443`, so `ps` shows upstream names.
pub const COMPONENT_LINKS: &[(&str, &str)] = &[
    ("kube-apiserver", "apiserver"),
    ("kube-controller-manager", "controller-manager"),
    ("kube-scheduler", "scheduler"),
    ("cloud-controller-manager", "cloud-controller-manager"),
    ("kubelet", "kubelet"),
    ("kube-proxy", "proxy"),
    ("klab-store", "store"),
];

/// Rewrites argv for a multi-call start: `kube-apiserver ARGS` becomes `klab apiserver ARGS`.
pub fn argv_for(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut args: Vec<OsString> = args.into_iter().collect();
    let Some(argv0) = args.first() else {
        return vec![OsString::from("klab")];
    };
    let name = std::path::Path::new(argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some((_, sub)) = COMPONENT_LINKS.iter().find(|(link, _)| *link == name) {
        args.insert(1, OsString::from(*sub));
    }
    args
}

#[derive(Debug, Parser)]
#[command(
    name = "klab",
    version,
    about = "An educational Kubernetes cluster lab, and the tools to look inside any cluster",
    long_about = None,
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work with the certificates behind a kubeconfig or a PKI folder
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Show the cluster's processes the way `ps auxww` shows them on a node, with their flags
    Ps(PsArgs),
}

/// Machine-readable output, as kubectl's `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Json,
    Yaml,
}

/// Which kubeconfig and context to read, resolved as kubectl resolves them.
#[derive(Debug, Clone, Default, Args)]
pub struct KubeconfigArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, merged as kubectl does, else ~/.kube/config)
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current-context)
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Write the CA, client certificate and key of a kubeconfig context as PEM files for curl
    Extract(ExtractArgs),
    /// Explain certificates: who they name, who signed them, when they expire, whether they fit
    Inspect(InspectArgs),
    /// A table of certificate expirations, like `kubeadm certs check-expiration`
    CheckExpiration(CheckExpirationArgs),
}

#[derive(Debug, Args)]
pub struct ExtractArgs {
    #[command(flatten)]
    pub kubeconfig: KubeconfigArgs,
    /// Folder to write ca.pem, cert.pem and key.pem into
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out_dir: PathBuf,
    /// Overwrite files that already exist
    #[arg(long)]
    pub force: bool,
    /// Print the PEM data instead of writing files
    #[arg(long, conflicts_with_all = ["out_dir", "force"])]
    pub stdout: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// PEM files holding certificates and private keys (a CA among them is used to verify the others)
    #[arg(value_name = "FILE", required_unless_present_any = ["kubeconfig", "context"])]
    pub files: Vec<PathBuf>,
    /// Inspect the certificates of a kubeconfig context instead of files
    #[arg(long, value_name = "PATH", conflicts_with = "files")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to inspect (default: its current-context)
    #[arg(long, value_name = "NAME", conflicts_with = "files")]
    pub context: Option<String>,
    /// A CA certificate to verify the chain against
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    #[arg(short, long, value_enum)]
    pub output: Option<OutputFormat>,
}

#[derive(Debug, Args)]
pub struct CheckExpirationArgs {
    /// The PKI folder, as kubeadm's --cert-dir
    #[arg(long, value_name = "DIR", default_value = "/etc/kubernetes/pki")]
    pub pki_dir: PathBuf,
    /// Where admin.conf and the other kubeconfigs live (default: the PKI folder's parent)
    #[arg(long, value_name = "DIR")]
    pub kubeconfig_dir: Option<PathBuf>,
    #[arg(short, long, value_enum)]
    pub output: Option<OutputFormat>,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Read a captured `ps auxww` text instead of this machine's /proc ("-" for stdin)
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// Show every process, not only the cluster's
    #[arg(long)]
    pub all: bool,
    /// Explain each component's flags (all components, or only COMPONENT)
    #[arg(long, value_name = "COMPONENT", num_args = 0..=1, conflicts_with = "check")]
    pub flags: Option<Option<String>>,
    /// Judge the security-relevant flags, in kube-bench's shape
    #[arg(long)]
    pub check: bool,
    #[arg(short, long, value_enum)]
    pub output: Option<OutputFormat>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<String> {
        argv_for(args.iter().map(OsString::from))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn a_component_link_runs_that_component() {
        assert_eq!(
            argv(&["/usr/local/bin/kube-apiserver", "--secure-port=6443"]),
            [
                "/usr/local/bin/kube-apiserver",
                "apiserver",
                "--secure-port=6443"
            ]
        );
        assert_eq!(argv(&["klab-store"]), ["klab-store", "store"]);
        assert_eq!(argv(&["./klab", "ps"]), ["./klab", "ps"]);
        assert_eq!(argv(&[]), ["klab"]);
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

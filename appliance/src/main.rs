//! `cxr-appliance`: the appliance's command line. Wiring only; the work lives
//! in the library crates. `anyhow` is used here and nowhere else.

#[cfg(all(feature = "firmware", any(feature = "dev", feature = "testing")))]
compile_error!("a firmware image carries neither `dev` nor `testing`: build it with `--no-default-features --features firmware`");

mod accel;
mod access_cmd;
mod admin_client;
mod audit_cmd;
mod bundle_cmd;
mod classify;
#[cfg(feature = "testing")]
mod dev_model;
mod device;
mod dicom_cmd;
mod inspect;
mod outbox_cmd;
mod serve;
mod study_cmd;
#[cfg(feature = "testing")]
mod testing;
mod tls_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cxr-appliance",
    version,
    about = "Chest X-ray classifier appliance"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read DICOM files through the guarded ingest path and report what the
    /// appliance would see: one JSON object per line per file. Exit code 0 when
    /// every file was accepted, 2 when any was refused.
    Inspect(inspect::InspectArgs),
    /// Classify studies with the active signed bundle (or `--bundle FILE`,
    /// verified on the fly): one JSON decision per line, each audited before
    /// it is printed. Exit code 0 when every study got a decision, 3 when any
    /// abstained, 2 when any was refused, 4 when no verified model is available.
    Classify(classify::ClassifyArgs),
    /// The resident service: a DICOM node (C-ECHO, C-STORE) that stores every
    /// instance durably before acknowledging it, classifies it with the
    /// active bundle (verified and self-tested once, kept warm) and writes
    /// versioned study results under the state directory. Runs until
    /// SIGTERM or SIGINT.
    Serve(serve::ServeArgs),
    /// Result SRs waiting for their destinations: list, retry, drop. Goes
    /// through a running `serve`, or opens the outbox when none runs.
    #[command(subcommand)]
    Outbox(outbox_cmd::OutboxCommand),
    /// Studies the running service holds: `study rerun UID`.
    #[command(subcommand)]
    Study(study_cmd::StudyCommand),
    /// DICOM network checks: `dicom echo AE@HOST:PORT`.
    #[command(subcommand)]
    Dicom(dicom_cmd::DicomCommand),
    /// Model bundles: verify, install, status, rollback.
    #[command(subcommand)]
    Bundle(bundle_cmd::BundleCommand),
    /// The audit log: verify, export.
    #[command(subcommand)]
    Audit(audit_cmd::AuditCommand),
    /// Local users of the HTTP side (argon2id): add, passwd, remove, list.
    #[command(subcommand)]
    User(access_cmd::UserCommand),
    /// API tokens for machines (kept as digests): create, revoke, list.
    #[command(subcommand)]
    Token(access_cmd::TokenCommand),
    /// The HTTPS certificate: `tls fingerprint`.
    #[command(subcommand)]
    Tls(tls_cmd::TlsCommand),
    /// Write a random-weight model and neutral parameters, to try `classify`
    /// end to end. The output is noise: never use it on patients.
    #[cfg(feature = "testing")]
    #[command(hide = true)]
    DevRandomModel(dev_model::DevModelArgs),
}

fn main() -> ExitCode {
    // Keep the default multi-line report off the operator's console, and
    // say what the panic is: a decoder fault that the guarded reader turns
    // into the study's DICOM error, or an internal fault (inside a study it
    // fails that study with STUDY_PANICKED; elsewhere the command stops).
    std::panic::set_hook(Box::new(|info| {
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        // One JSON line, as every line of the service's console is.
        if cxr_dicom::inside_decoder_guard() {
            serve::console::say(
                "decoder_fault",
                serde_json::json!({ "message": format!("cxr-appliance: decoder fault{place}, caught: the study is refused as damaged") }),
            );
        } else {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            serve::console::say(
                "internal_fault",
                serde_json::json!({ "message": format!("cxr-appliance: internal fault{place}: {message}") }),
            );
        }
    }));
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => inspect::run(&args),
        Command::Classify(args) => classify::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Outbox(cmd) => outbox_cmd::run(&cmd),
        Command::Dicom(cmd) => dicom_cmd::run(&cmd),
        Command::Study(cmd) => study_cmd::run(&cmd),
        Command::Bundle(cmd) => bundle_cmd::run(&cmd),
        Command::Audit(cmd) => audit_cmd::run(&cmd),
        Command::User(cmd) => access_cmd::run_user(&cmd),
        Command::Token(cmd) => access_cmd::run_token(&cmd),
        Command::Tls(cmd) => tls_cmd::run(&cmd),
        #[cfg(feature = "testing")]
        Command::DevRandomModel(args) => dev_model::run(&args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            match e
                .chain()
                .find_map(|c| c.downcast_ref::<cxr_audit::AuditError>())
            {
                Some(a) => eprintln!("cxr-appliance: error {}: {e:#}", a.code()),
                None => eprintln!("cxr-appliance: error: {e:#}"),
            }
            exit_code_of(&e)
        }
    }
}

/// Exit code when another process holds the audit log (sysexits'
/// EX_TEMPFAIL): nothing was done, try again later.
pub const EXIT_AUDIT_LOCKED: u8 = 75;

fn exit_code_of(e: &anyhow::Error) -> ExitCode {
    let locked = e
        .chain()
        .filter_map(|c| c.downcast_ref::<cxr_audit::AuditError>())
        .any(|a| matches!(a, cxr_audit::AuditError::Locked { .. }));
    let board_fixed = e.downcast_ref::<device::BoardFixed>().is_some();
    ExitCode::from(match (locked, board_fixed) {
        (true, _) => EXIT_AUDIT_LOCKED,
        (_, true) => 2,
        _ => 1,
    })
}

//! DICOM network fixtures: the running service as a child process, dcmtk's
//! `storescp` as the PACS, dcmtk's tools located on the PATH, and a raw
//! upper-layer peer for the hostile cases dcmtk will not produce (a
//! fragmented command, an abort mid-transfer, a 4 GiB PDU length).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dicom_ul::pdu::{
    read_pdu, write_pdu, AssociationRQ, PDataValue, PDataValueType, Pdu,
    PresentationContextProposed, UserVariableItem,
};

use crate::data::missing;

/// A dcmtk (or dicom3tools) program, or `None` after [`missing`] (which
/// fails under CI: `.ci/run` installs them).
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let found = std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    found.or_else(|| missing(name, "install dcmtk and dicom3tools (Debian packages)"))
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Poll `done` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    done()
}

/// `cxr-appliance serve` as a child process.
#[derive(Debug)]
pub struct Service {
    pub child: Child,
    pub port: u16,
    /// The HTTP side's port, when it listens.
    pub http_port: Option<u16>,
    pub ready: serde_json::Value,
    pub stderr: PathBuf,
}

impl Service {
    /// Start `bin serve` with `args` and wait (at most 3 minutes: the
    /// bundle's self-test) for its ready line. Panics if it exits first.
    pub fn start(bin: &Path, args: &[&str], env: &[(&str, &str)], stderr: &Path) -> Service {
        let err = std::fs::File::create(stderr).unwrap_or_else(|e| panic!("{e}"));
        let mut command = Command::new(bin);
        command.arg("serve").args(args);
        // Suites run side by side: the HTTP side takes a free port unless
        // the suite chose one (a release board refuses the override).
        let release = args.iter().any(|a| a.contains("release"));
        if !release && !args.contains(&"--http-listen") {
            command.args(["--http-listen", "127.0.0.1:0"]);
        }
        command.stdout(Stdio::piped()).stderr(err);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawning serve: {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(180))
            .unwrap_or_default();
        let ready: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "serve did not become ready: {line:?}\n{}",
                std::fs::read_to_string(stderr).unwrap_or_default()
            )
        });
        let port = ready["dicom"]
            .as_str()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {ready}"));
        let http_port = ready["http"]
            .as_str()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok());
        Service {
            child,
            port,
            http_port,
            ready,
            stderr: stderr.to_owned(),
        }
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Peak resident memory so far (VmHWM), KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, as a power cut would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and the exit code once it has stopped (at most 60 s).
    pub fn terminate(mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        None
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// dcmtk's `storescp` as the PACS, writing what it receives to `dir`.
#[derive(Debug)]
pub struct Pacs {
    child: Child,
    pub dir: PathBuf,
    pub port: u16,
}

impl Pacs {
    pub fn start(storescp: &Path, dir: &Path, port: u16) -> Pacs {
        Pacs::start_with(storescp, dir, port, &[])
    }

    /// [`Pacs::start`] with more `storescp` options (`+xi`: accept only
    /// Implicit VR Little Endian).
    pub fn start_with(storescp: &Path, dir: &Path, port: u16, options: &[&str]) -> Pacs {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(storescp)
            .args(options)
            .args(["-od"])
            .arg(dir)
            .args(["-aet", "PACS", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning storescp: {e}"));
        let up = wait_until(Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "storescp did not listen on {port}");
        Pacs {
            child,
            dir: dir.to_owned(),
            port,
        }
    }

    /// The files received so far.
    pub fn received(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

impl Drop for Pacs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw upper-layer peer: PDUs written and read by hand.
#[derive(Debug)]
pub struct RawPeer {
    pub stream: TcpStream,
}

pub const VERIFICATION: &str = "1.2.840.10008.1.1";
pub const CR_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.1";
pub const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

impl RawPeer {
    pub fn connect(port: u16) -> RawPeer {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap_or_else(|e| panic!("{e}"));
        RawPeer { stream }
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn send(&mut self, pdu: &Pdu) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        write_pdu(&mut bytes, pdu).map_err(std::io::Error::other)?;
        self.send_bytes(&bytes)
    }

    /// The next PDU, or `None` when the service closed the connection.
    pub fn read(&mut self) -> Option<Pdu> {
        let mut head = [0u8; 6];
        self.stream.read_exact(&mut head).ok()?;
        let length = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
        assert!(length <= 1 << 20, "the service sent a {length}-byte PDU");
        let mut bytes = head.to_vec();
        bytes.resize(6 + length, 0);
        self.stream.read_exact(&mut bytes[6..]).ok()?;
        read_pdu(&bytes[..], 1 << 20, true).ok().flatten()
    }

    /// Send an A-ASSOCIATE-RQ with one context per abstract syntax (ids
    /// 1, 3, 5, ...) in explicit VR little endian, and read the answer.
    pub fn associate(
        &mut self,
        calling: &str,
        called: &str,
        abstract_syntaxes: &[&str],
    ) -> Option<Pdu> {
        let rq = Pdu::AssociationRQ(AssociationRQ {
            protocol_version: 1,
            calling_ae_title: calling.into(),
            called_ae_title: called.into(),
            application_context_name: "1.2.840.10008.3.1.1.1".into(),
            presentation_contexts: abstract_syntaxes
                .iter()
                .enumerate()
                .map(|(i, a)| PresentationContextProposed {
                    id: (2 * i + 1) as u8,
                    abstract_syntax: (*a).into(),
                    transfer_syntaxes: vec![EXPLICIT_LE.into()],
                })
                .collect(),
            user_variables: vec![UserVariableItem::MaxLength(16384)],
        });
        self.send(&rq).ok()?;
        self.read()
    }

    pub fn pdv(
        &mut self,
        context: u8,
        command: bool,
        last: bool,
        data: &[u8],
    ) -> std::io::Result<()> {
        self.send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: context,
                value_type: if command {
                    PDataValueType::Command
                } else {
                    PDataValueType::Data
                },
                is_last: last,
                data: data.to_vec(),
            }],
        })
    }

    /// The status of the next response command.
    pub fn response_status(&mut self) -> Option<u16> {
        let mut command = Vec::new();
        loop {
            let Pdu::PData { data } = self.read()? else {
                return None;
            };
            for v in data {
                command.extend_from_slice(&v.data);
                if v.is_last {
                    return status_of(&command);
                }
            }
        }
    }
}

/// The Status (0000,0900) of an encoded command set.
pub fn status_of(command: &[u8]) -> Option<u16> {
    let mut at = 0;
    while at + 8 <= command.len() {
        let element = u16::from_le_bytes([command[at + 2], command[at + 3]]);
        let length = u32::from_le_bytes(command[at + 4..at + 8].try_into().ok()?) as usize;
        if element == 0x0900 && length == 2 {
            return Some(u16::from_le_bytes([command[at + 8], command[at + 9]]));
        }
        at += 8 + length;
    }
    None
}

//! The control socket (the plugin's reload after every record change, ping, status, stop)
//! and signals (SIGHUP reloads, SIGTERM/SIGINT stop and keep the records).

use super::{log, Daemon, Flow};
use nix::sys::signal::Signal;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

impl Daemon {
    pub(super) fn on_signal(&mut self) -> Flow {
        while let Ok(Some(info)) = self.signals.read_signal() {
            if info.ssi_signo == Signal::SIGHUP as u32 {
                log!("SIGHUP: reloading");
                for (ns, why) in self.reload() {
                    log!("cannot serve {ns}: {why}");
                }
                if self.records == 0 {
                    self.shutdown(true);
                    return Flow::Exit;
                }
            } else {
                log!("signal {}: stopping (records kept)", info.ssi_signo);
                self.shutdown(false);
                return Flow::Exit;
            }
        }
        Flow::Continue
    }

    pub(super) fn on_control(&mut self) -> Flow {
        loop {
            match self.control.accept() {
                Ok((s, _)) => {
                    if self.serve_control(s) == Flow::Exit {
                        return Flow::Exit;
                    }
                }
                Err(_) => return Flow::Continue,
            }
        }
    }

    /// One command per connection. The plugin is the only client (the socket is 0600), and
    /// the short timeouts bound how long a stuck one can hold the loop.
    fn serve_control(&mut self, s: UnixStream) -> Flow {
        let _ = s.set_nonblocking(false);
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
        let mut line = String::new();
        if BufReader::new((&s).take(1024)).read_line(&mut line).is_err() {
            return Flow::Continue;
        }
        let mut w = &s;
        match line.trim() {
            "ping" => {
                let _ = w.write_all(b"pong\n");
            }
            "reload" => {
                let fails = self.reload();
                let mut reply = String::new();
                for (ns, why) in &fails {
                    log!("cannot serve {ns}: {why}");
                    reply.push_str(&format!("fail {ns}\t{}\n", why.replace(['\n', '\t'], " ")));
                }
                reply.push_str("ok\n");
                if self.records == 0 {
                    log!("last record removed: exiting");
                    self.shutdown(true);
                    let _ = w.write_all(reply.as_bytes());
                    return Flow::Exit;
                }
                let _ = w.write_all(reply.as_bytes());
            }
            "status" => {
                let _ = w.write_all(format!("{}\nok\n", self.status()).as_bytes());
            }
            "stop" => {
                log!("stop requested (records kept)");
                self.shutdown(false);
                let _ = w.write_all(b"ok\n");
                return Flow::Exit;
            }
            other => {
                let _ = w.write_all(format!("error unknown command {other:?}\n").as_bytes());
            }
        }
        Flow::Continue
    }

    fn status(&self) -> String {
        let listeners: Vec<serde_json::Value> = self
            .listeners
            .slots
            .iter()
            .flatten()
            .map(|l| {
                let nets: Vec<&str> = self
                    .zone
                    .scopes
                    .get(&l.id)
                    .map(|s| s.nets.iter().map(|&i| self.zone.nets[i].name.as_str()).collect())
                    .unwrap_or_default();
                serde_json::json!({
                    "netns": l.netns,
                    "udpPort": l.udp.local_addr().map(|a| a.port()).unwrap_or(0),
                    "tcpPort": l.tcp.local_addr().map(|a| a.port()).unwrap_or(0),
                    "networks": nets,
                })
            })
            .collect();
        serde_json::json!({
            "pid": std::process::id(),
            "records": self.records,
            "names": self.zone.record_count(),
            "pending": self.forwards.count(),
            "forwardsRefused": self.forwards.refused(),
            "tcpConnections": self.conns.count(),
            "listeners": listeners,
        })
        .to_string()
    }
}

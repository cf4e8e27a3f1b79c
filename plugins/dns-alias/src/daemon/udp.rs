//! Queries over UDP: read a batch from one container's socket, answer what the zone knows
//! in place, hand the rest to `forward`, send the batch's answers in one call.

use super::forward::Origin;
use super::udp_batch::BATCH;
use super::Daemon;
use crate::wire::{self, Bad};
use crate::zone::Outcome;
use std::os::fd::AsRawFd;

/// recvmmsg batches per wakeup of one socket (then the others get their turn).
const UDP_BATCHES: usize = 4;

impl Daemon {
    pub(super) fn on_udp(&mut self, idx: usize) {
        let Some(l) = self.listeners.get(idx) else { return };
        let udp = l.udp.clone();
        let scope = l.id;
        let fd = udp.as_raw_fd();
        for _ in 0..UDP_BATCHES {
            let n = match self.batch.recv(fd) {
                Ok(n) if n > 0 => n,
                _ => break,
            };
            for i in 0..n {
                let msg = self.batch.msg(i);
                match wire::parse_query(msg) {
                    Err(Bad::Ignore) => {}
                    Err(Bad::Reply { rcode, question_end }) => {
                        wire::build_reply(
                            &mut self.out,
                            msg,
                            question_end,
                            false,
                            rcode,
                            false,
                            0,
                            &[],
                            wire::UDP_MIN,
                        );
                        self.batch.reply(i, &self.out);
                    }
                    Ok(q) => {
                        let limit = q.udp_limit();
                        match self.zone.answer(
                            scope,
                            msg,
                            &q,
                            limit,
                            &mut self.out,
                            &mut self.scratch,
                        ) {
                            Outcome::Reply => self.batch.reply(i, &self.out),
                            Outcome::Forward(ups) => {
                                let query = msg.to_vec();
                                if let Some(client) = self.batch.peer(i) {
                                    let origin = Origin::Udp { via: udp.clone(), client, limit };
                                    self.start_forward(origin, query, &q, ups);
                                }
                            }
                        }
                    }
                }
            }
            self.batch.flush(fd);
            if n < BATCH {
                break;
            }
        }
    }
}

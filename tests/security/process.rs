//! The process: no core dumps, start-up self-tests, signatures bound to the daemon, the systemd unit.

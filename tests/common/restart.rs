//! A broker that crashes and comes back on the same port, for the recovery tests: with
//! memory storage it comes back empty (as after a lost disk, or a topic re-created), with
//! sqlite storage it comes back with its log, committed offsets and producer ids.

use super::{Broker, log_dir, spawn_tansu};

impl Broker {
    /// A broker whose storage survives a restart: sqlite in a fresh file.
    pub fn start_persistent() -> Broker {
        let file = log_dir().join(format!("tansu-{}.db", super::free_port()));
        let _ = std::fs::remove_file(&file);
        // tansu reads the path after `sqlite://` relative to its working directory.
        let cwd = std::env::current_dir().unwrap();
        let relative = file
            .strip_prefix(&cwd)
            .expect("the test dir is under the cwd");
        Broker::start_with_storage(&format!("sqlite://{}", relative.display()))
    }

    /// SIGKILLs the broker and starts it again on the same port with the same storage.
    pub fn kill_and_restart(&mut self, down_for: std::time::Duration) {
        self.stop();
        std::thread::sleep(down_for);
        self.restart();
    }

    /// Starts the broker again (after [`Broker::stop`]) on the same port and storage.
    pub fn restart(&mut self) {
        let port: u16 = self.addr.rsplit(':').next().unwrap().parse().unwrap();
        self.child = Some(spawn_tansu(port, &self.storage));
    }
}

impl super::Daemon {
    /// Whether the process is still running (it was not restarted, and did not exit).
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

//! How a VM ends, and the signal that carries it from a vCPU or device
//! thread to the main thread.

use std::sync::Mutex;

use vmm_sys_util::eventfd::EventFd;

/// Why the VM stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest powered off (ACPI S5).
    PowerOff,
    /// The guest reset (reset register, i8042, triple fault).
    Reset,
    /// Stopped through the control socket (`stop`).
    Stopped,
    /// KVM could not go on running the guest.
    Crashed(String),
}

impl ExitReason {
    /// The process exit status: 0 power-off or stop, 3 reset, 1 crash.
    pub fn exit_code(&self) -> u8 {
        match self {
            ExitReason::PowerOff | ExitReason::Stopped => 0,
            ExitReason::Reset => 3,
            ExitReason::Crashed(_) => 1,
        }
    }
}

/// The first exit requested wins; the main thread waits on the eventfd.
#[derive(Debug)]
pub struct ExitSignal {
    reason: Mutex<Option<ExitReason>>,
    evt: EventFd,
}

impl ExitSignal {
    /// A signal no one has raised yet.
    pub fn new() -> std::io::Result<ExitSignal> {
        Ok(ExitSignal {
            reason: Mutex::new(None),
            evt: EventFd::new(libc::EFD_NONBLOCK)?,
        })
    }

    /// Requests that the VM end for `reason`; later requests are ignored.
    pub fn request(&self, reason: ExitReason) {
        let mut r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_none() {
            *r = Some(reason);
            let _ = self.evt.write(1);
        }
    }

    /// The reason, once requested.
    pub fn reason(&self) -> Option<ExitReason> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The eventfd that becomes readable on the first request.
    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }
}

//! Log output captured in memory, for tests that read back what the host logged (a
//! secret that must not appear, a level that must or must not come out).

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

/// An in-memory log sink. Clones share the buffer: hand one clone to the subscriber
/// (`move || capture.clone()` is a tracing writer) and read the text from another.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

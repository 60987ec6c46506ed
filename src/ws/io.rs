//! The in-memory stream tungstenite runs over.
//!
//! A connection reads socket bytes into its shard's scratch buffer and
//! hands them to tungstenite through [`BufferedIo`]: reads drain that slice
//! and then report `WouldBlock` (never `Ok(0)`, which tungstenite would
//! take for EOF); writes (tungstenite's own pongs and close frames) are
//! captured so the connection can put them on its single outbound queue
//! and frames never interleave. Nothing here touches a socket.

use std::io::{self, Read, Write};

pub struct BufferedIo<'a> {
    input: &'a [u8],
    /// Bytes tungstenite wrote (control replies), in order.
    pub output: Vec<u8>,
}

impl<'a> BufferedIo<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        BufferedIo {
            input,
            output: Vec::new(),
        }
    }
}

impl Read for BufferedIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.input.len().min(buf.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Ok(n)
    }
}

impl Write for BufferedIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drains_then_would_block() {
        let mut io = BufferedIo::new(b"abcdef");
        let mut buf = [0u8; 4];
        assert_eq!(io.read(&mut buf).expect("read"), 4);
        assert_eq!(io.read(&mut buf).expect("read"), 2);
        let err = io.read(&mut buf).expect_err("empty");
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        io.write_all(b"xy").expect("write");
        assert_eq!(io.output, b"xy");
    }
}

//! A connection's input path: arbitrary socket bytes fed, in arbitrary
//! chunk sizes, through `ws::io::BufferedIo` into a server-role
//! `tungstenite::protocol::WebSocketContext` configured as the shard does
//! (zero read buffer, 64 KiB message and frame limits), exactly as
//! `connection::Connection::decode` loops over it.
//!
//! Beyond "no panic, no hang": no message over the limit comes out, and
//! once reading failed or the peer closed, the loop is not fed again (as in
//! the shard, which closes the connection).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tungstenite::protocol::{Message, Role, WebSocketConfig, WebSocketContext};
use wsgate::internals::BufferedIo;

const MAX: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    // First byte: chunk size for splitting the rest (1..=256 bytes).
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(split) + 1;
    let config = WebSocketConfig::default()
        .read_buffer_size(0)
        .max_message_size(Some(MAX))
        .max_frame_size(Some(MAX));
    let mut ws = WebSocketContext::new(Role::Server, Some(config));
    for piece in bytes.chunks(chunk) {
        let mut io = BufferedIo::new(piece);
        loop {
            match ws.read(&mut io) {
                Ok(Message::Close(_)) => {}
                Ok(message) => assert!(message.len() <= MAX, "{} bytes", message.len()),
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    break
                }
                Err(_) => return,
            }
        }
        // The replies tungstenite queued (pongs, close) were captured.
        let _ = io.output.len();
    }
});

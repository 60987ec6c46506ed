//! Server-to-client frame bytes, built once and shared.
//!
//! Server frames are unmasked (RFC 6455 §5.1), so one encoded frame is valid
//! for every recipient: a broadcast is serialized and framed here exactly
//! once and handed to every connection as the same `Arc<[u8]>`.
//! This module only builds bytes; writing them is `connection::outbound`'s.

use std::sync::Arc;

use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// The largest header of an unmasked server frame.
const MAX_HEADER: usize = 10;

/// Builds a single, final text frame whose payload is written by `write`.
///
/// The payload is written after a reserved header gap and the header is
/// slotted in front, so the payload is never copied into a second buffer.
pub fn text_frame(write: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    data_frame(Data::Text, write)
}

/// Builds a single, final data frame (text or binary) of the payload
/// written by `write`.
pub fn data_frame(kind: Data, write: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256);
    buf.resize(MAX_HEADER, 0);
    write(&mut buf);
    let payload_len = buf.len() - MAX_HEADER;
    let mut header = [0u8; MAX_HEADER];
    let header_len = encode_header(kind, payload_len as u64, &mut header);
    let start = MAX_HEADER - header_len;
    buf[start..MAX_HEADER].copy_from_slice(&header[..header_len]);
    buf.drain(..start);
    buf
}

/// Encodes a final, unmasked data-frame header; returns its length.
fn encode_header(kind: Data, payload_len: u64, out: &mut [u8; MAX_HEADER]) -> usize {
    let header = FrameHeader {
        is_final: true,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode: OpCode::Data(kind),
        mask: None,
    };
    let mut cursor = std::io::Cursor::new(&mut out[..]);
    // Writing at most 10 bytes into a 10-byte buffer cannot fail.
    let _ = header.format(payload_len, &mut cursor);
    cursor.position() as usize
}

/// Length of the payload of a frame built by [`text_frame`] (for size checks).
pub fn payload_len(frame: &[u8]) -> usize {
    let header = match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    };
    frame.len().saturating_sub(header)
}

/// A Close frame with `code` and `reason` (at most 123 bytes, longer is
/// cut: a control payload is at most 125 bytes), for sockets written
/// without a tungstenite context (accept-then-close refusals).
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut frame = Vec::with_capacity(4 + reason.len());
    frame.push(0x88);
    frame.push((2 + reason.len()) as u8);
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(reason);
    frame
}

/// A WebSocket Ping with an empty payload, shared by every heartbeat.
pub fn ping_frame() -> Arc<[u8]> {
    Arc::from(&[0x89u8, 0x00][..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use tungstenite::protocol::frame::coding::Control;

    fn parse(frame: &[u8]) -> (FrameHeader, u64, usize) {
        let mut cursor = Cursor::new(frame);
        let (header, len) = FrameHeader::parse(&mut cursor)
            .expect("valid header")
            .expect("complete header");
        (header, len, cursor.position() as usize)
    }

    #[test]
    fn close_frames_parse_with_code_and_reason() {
        let bytes = close_frame(4429, r#"{"code":"X"}"#);
        let (header, len, header_len) = parse(&bytes);
        assert_eq!(header.opcode, OpCode::Control(Control::Close));
        assert!(header.is_final && header.mask.is_none());
        assert_eq!(len as usize, bytes.len() - header_len);
        assert_eq!(&bytes[header_len..header_len + 2], &4429u16.to_be_bytes());
        assert_eq!(&bytes[header_len + 2..], br#"{"code":"X"}"#);
    }

    #[test]
    fn frames_round_trip_at_each_length_class() {
        for size in [0usize, 5, 125, 126, 1000, 65_535, 65_536, 200_000] {
            let payload = vec![b'x'; size];
            let frame = text_frame(|buf| buf.extend_from_slice(&payload));
            let (header, len, header_len) = parse(&frame);
            assert!(header.is_final);
            assert!(header.mask.is_none());
            assert_eq!(header.opcode, OpCode::Data(Data::Text));
            assert_eq!(len as usize, size);
            assert_eq!(&frame[header_len..], &payload[..]);
            assert_eq!(payload_len(&frame), size);
        }
    }
}

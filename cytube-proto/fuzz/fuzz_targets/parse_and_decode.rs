//! Fuzzes `frame::parse`, then `ServerEvent::decode` / `ClientEvent::decode`
//! on whatever parsed, then `RoomState::apply` and re-encoding: none may panic,
//! and a decoded server event must re-encode to a frame that parses.

#![no_main]

use daz_cytube_proto::events::{ClientEvent, ServerEvent};
use daz_cytube_proto::frame::{self, EioPacket, SioPacket};
use daz_cytube_proto::room::RoomState;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(pkt) = frame::parse(&text) else {
        return;
    };
    // Whatever parsed re-encodes to something that parses again.
    let again = pkt.encode();
    assert!(frame::parse(&again).is_ok(), "re-encoded {again:?} does not parse");
    let EioPacket::Message(SioPacket::Event { name, payload, .. }) = pkt else {
        return;
    };
    if let Ok(ev) = ServerEvent::decode(&name, payload) {
        let mut room = RoomState::default();
        let _ = room.apply(&ev);
        let _ = serde_json::to_string(&room);
        if let Ok(f) = ev.to_frame() {
            assert!(frame::parse(&f).is_ok() || f.len() > frame::MAX_FRAME_BYTES);
        }
    }
    let _ = ClientEvent::decode(&name, payload);
});

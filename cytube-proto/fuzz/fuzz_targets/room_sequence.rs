//! Fuzzes a whole session: the input's lines are frames, decoded and applied in
//! order to one `RoomState`. Nothing may panic, and after every event the
//! playlist is still one consistent list: walking it from its head visits every
//! item exactly once.

#![no_main]

use std::collections::HashSet;

use daz_cytube_proto::events::ServerEvent;
use daz_cytube_proto::frame::{self, EioPacket, SioPacket};
use daz_cytube_proto::room::RoomState;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut room = RoomState::default();
    for line in text.lines() {
        let Ok(EioPacket::Message(SioPacket::Event { name, payload, .. })) = frame::parse(line)
        else {
            continue;
        };
        let Ok(ev) = ServerEvent::decode(&name, payload) else {
            continue;
        };
        let _ = room.apply(&ev);
        let uids = room.playlist.uids();
        assert_eq!(
            uids.len(),
            room.playlist.len(),
            "the walk misses items after {name}"
        );
        let distinct: HashSet<u64> = uids.iter().copied().collect();
        assert_eq!(distinct.len(), uids.len(), "the walk repeats an item after {name}");
    }
    let _ = serde_json::to_string(&room);
});

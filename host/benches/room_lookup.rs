//! The command router's rank lookup, per command: the whole-room JSON it used to read
//! (`room_state`: serialize the room, hand the text over, parse it, find the user) beside
//! the keyed lookup it reads now (`room_user`: one user's JSON, parsed), on rooms of 50,
//! 1000 and 10000 users with a 200-item playlist, in the same run.
//!
//! The whole-room rows are measured twice: on a room that changes between commands
//! (every command pays a new snapshot and its serialization, as in a busy channel) and on
//! an unchanged room (readers share one snapshot and its JSON; only the copy and the parse
//! remain).
//!
//! `cargo bench -p daz-host --bench room_lookup`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use daz_cytube_proto::events::{Media, PlaylistItem, ServerEvent, Uid, User};
use daz_host::{
    cytube::{RoomRegistry, RoomShared},
    plugins::host_api::RoomDirectory,
};

fn room(users: usize) -> std::sync::Arc<RoomRegistry> {
    let reg = RoomRegistry::new();
    let room = RoomShared::new("lobby", "lobby", "http://x", Some("bot".into()));
    {
        let mut st = room.state.write();
        st.apply(&ServerEvent::Userlist(
            (0..users)
                .map(|i| User {
                    name: format!("user{i}"),
                    rank: (i % 4) as f64,
                    ..User::default()
                })
                .collect(),
        ));
        st.apply(&ServerEvent::Playlist(
            (0..200)
                .map(|i| PlaylistItem {
                    media: Media {
                        id: format!("vid{i}"),
                        title: format!("A video title number {i}"),
                        media_type: "yt".into(),
                        seconds: 240.0,
                        ..Media::default()
                    },
                    uid: Uid(i),
                    temp: false,
                    queueby: "user1".into(),
                })
                .collect(),
        ));
    }
    reg.insert(room);
    reg
}

/// What the router did before: the whole room, parsed, searched.
fn rank_from_whole_room(reg: &RoomRegistry, user: &str) -> f64 {
    let json = reg.room_state_json("lobby").unwrap_or_default();
    let state: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
    state["state"]["users"]
        .as_array()
        .and_then(|users| {
            users.iter().find(|u| {
                u["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(user))
            })
        })
        .and_then(|u| u["rank"].as_f64())
        .unwrap_or(0.0)
}

/// What it does now: one keyed lookup, one small parse.
fn rank_keyed(reg: &RoomRegistry, user: &str) -> f64 {
    reg.room_user_json("lobby", user)
        .flatten()
        .and_then(|json| serde_json::from_str::<User>(&json).ok())
        .map_or(0.0, |u| u.rank)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("rank_lookup_per_command");
    for users in [50usize, 1000, 10_000] {
        let reg = room(users);
        let who = format!("USER{}", users / 2);
        assert_eq!(rank_keyed(&reg, &who), rank_from_whole_room(&reg, &who));
        g.bench_with_input(
            BenchmarkId::new("keyed_room_user", users),
            &who,
            |b, who| b.iter(|| black_box(rank_keyed(&reg, who))),
        );
        g.bench_with_input(
            BenchmarkId::new("whole_room_unchanged", users),
            &who,
            |b, who| b.iter(|| black_box(rank_from_whole_room(&reg, who))),
        );
        let shared = reg.get("lobby").expect("room");
        let mut n = 0u64;
        g.bench_with_input(
            BenchmarkId::new("whole_room_changing", users),
            &who,
            |b, who| {
                b.iter(|| {
                    n += 1;
                    shared.state.write().usercount = n;
                    black_box(rank_from_whole_room(&reg, who))
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

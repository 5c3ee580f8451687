//! Cytube ranks in words, for the refusals and answers of the feature plugins.
//!
//! Cytube ranks are numbers (`../shared/docs/CYTUBE.md`): 0 guests, 1 registered users,
//! 1.5 leaders, 2 moderators, 3 channel admins, 4 owners, 5 the founder, 255 site admins.
//! A channel may set a permission to any number in between, so every function here names
//! the group a rank reaches, never an exact match.

/// The group of people a rank `rank` and above reaches: `moderators` for 2 (and 2.5).
/// Below guests (anonymous readers) is `everyone`.
pub fn name(rank: f64) -> &'static str {
    match rank {
        r if r >= 255.0 => "site admins",
        r if r >= 5.0 => "the channel founder",
        r if r >= 4.0 => "channel owners",
        r if r >= 3.0 => "channel admins",
        r if r >= 2.0 => "moderators",
        r if r >= 1.5 => "leaders",
        r if r >= 1.0 => "registered users",
        r if r >= 0.0 => "guests",
        _ => "everyone",
    }
}

/// The number and its group: `2 (moderators)`, for "rank 2 (moderators) and above".
pub fn words(rank: f64) -> String {
    format!("{rank} ({})", name(rank))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_name_the_group_they_reach() {
        assert_eq!(name(-1.0), "everyone");
        assert_eq!(name(0.0), "guests");
        assert_eq!(name(1.0), "registered users");
        assert_eq!(name(1.5), "leaders");
        assert_eq!(name(2.0), "moderators");
        assert_eq!(name(2.5), "moderators");
        assert_eq!(name(3.0), "channel admins");
        assert_eq!(name(4.0), "channel owners");
        assert_eq!(name(5.0), "the channel founder");
        assert_eq!(name(255.0), "site admins");
        assert_eq!(words(1.5), "1.5 (leaders)");
        assert_eq!(words(2.0), "2 (moderators)");
    }
}

//! The idempotency key of a notification in the outbox: the one place it is rendered and
//! parsed. Keys are stored (the outbox's unique `key` column) and sent to channels that
//! deduplicate by them, so each form is byte-identical to what earlier releases wrote.

use std::fmt;

/// A notification's idempotency key: one per incident, round, tier and channel; per storm
/// group, tier and channel for a group's summary; per incident and channel for a resolution.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NotificationKey {
    /// `{incident}/{round}/{tier}/{channel}`: a tier of an escalation round.
    Round {
        incident: String,
        round: u32,
        tier: u32,
        channel: String,
    },
    /// `group/{group}/{tier}/{channel}`: a tier of a storm group's summary.
    GroupSummary {
        group: String,
        tier: u32,
        channel: String,
    },
    /// `{incident}/group/{group}/{tier}/{channel}`: a storm group's summary written before
    /// it belonged to the group (migration 6), when it was its first incident's. Such rows
    /// may still be in the outbox; this form is read, never written.
    LeaderGroupSummary {
        incident: String,
        group: String,
        tier: u32,
        channel: String,
    },
    /// `{incident}/resolved/{channel}`: the incident's resolution, told to a channel.
    Resolution { incident: String, channel: String },
    /// `{incident}/approval/{tier}/{channel}`: a tier of the incident's approval request.
    ApprovalRequest {
        incident: String,
        tier: u32,
        channel: String,
    },
    /// `{incident}/withdrawn/{channel}`: the approval request withdrawn, told to a channel
    /// it was sent to.
    Withdrawal { incident: String, channel: String },
}

impl fmt::Display for NotificationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotificationKey::Round {
                incident,
                round,
                tier,
                channel,
            } => write!(f, "{incident}/{round}/{tier}/{channel}"),
            NotificationKey::GroupSummary {
                group,
                tier,
                channel,
            } => write!(f, "group/{group}/{tier}/{channel}"),
            NotificationKey::LeaderGroupSummary {
                incident,
                group,
                tier,
                channel,
            } => write!(f, "{incident}/group/{group}/{tier}/{channel}"),
            NotificationKey::Resolution { incident, channel } => {
                write!(f, "{incident}/resolved/{channel}")
            }
            NotificationKey::ApprovalRequest {
                incident,
                tier,
                channel,
            } => write!(f, "{incident}/approval/{tier}/{channel}"),
            NotificationKey::Withdrawal { incident, channel } => {
                write!(f, "{incident}/withdrawn/{channel}")
            }
        }
    }
}

impl NotificationKey {
    /// The key `s` renders, or `None` when `s` is not exactly the rendering of a key.
    pub fn parse(s: &str) -> Option<NotificationKey> {
        let key = Self::split(s)?;
        // Only what renders back to the same bytes is a key (not "+1", "01", an empty part).
        (key.to_string() == s).then_some(key)
    }

    fn split(s: &str) -> Option<NotificationKey> {
        let number = |p: &str| p.parse::<u32>().ok();
        let nonempty = |p: &str| (!p.is_empty()).then(|| p.to_string());
        // `group/{group}/{tier}/{channel}`
        let group = |rest: &str| {
            let mut parts = rest.splitn(3, '/');
            let group = nonempty(parts.next()?)?;
            let tier = number(parts.next()?)?;
            let channel = nonempty(parts.next()?)?;
            Some((group, tier, channel))
        };
        if let Some(rest) = s.strip_prefix("group/") {
            let (group, tier, channel) = group(rest)?;
            return Some(NotificationKey::GroupSummary {
                group,
                tier,
                channel,
            });
        }
        let (incident, rest) = s.split_once('/')?;
        let incident = nonempty(incident)?;
        if let Some(channel) = rest.strip_prefix("resolved/") {
            let channel = nonempty(channel)?;
            return Some(NotificationKey::Resolution { incident, channel });
        }
        if let Some(channel) = rest.strip_prefix("withdrawn/") {
            let channel = nonempty(channel)?;
            return Some(NotificationKey::Withdrawal { incident, channel });
        }
        if let Some(rest) = rest.strip_prefix("approval/") {
            let (tier, channel) = rest.split_once('/')?;
            return Some(NotificationKey::ApprovalRequest {
                incident,
                tier: number(tier)?,
                channel: nonempty(channel)?,
            });
        }
        if let Some(rest) = rest.strip_prefix("group/") {
            let (group, tier, channel) = group(rest)?;
            return Some(NotificationKey::LeaderGroupSummary {
                incident,
                group,
                tier,
                channel,
            });
        }
        let mut parts = rest.splitn(3, '/');
        let round = number(parts.next()?)?;
        let tier = number(parts.next()?)?;
        let channel = nonempty(parts.next()?)?;
        Some(NotificationKey::Round {
            incident,
            round,
            tier,
            channel,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::NotificationKey::{self, *};

    const INCIDENT: &str = "01jdq3v5k8x2m9n4p6r7s8t9va";
    const GROUP: &str = "01JDQ3V5K8X2M9N4P6R7S8T9VB";

    fn check(key: NotificationKey, rendered: &str) {
        assert_eq!(key.to_string(), rendered);
        assert_eq!(NotificationKey::parse(rendered), Some(key), "{rendered}");
    }

    #[test]
    fn each_form_renders_as_it_always_has_and_parses_back() {
        check(
            Round {
                incident: INCIDENT.into(),
                round: 2,
                tier: 1,
                channel: "ops-mail".into(),
            },
            "01jdq3v5k8x2m9n4p6r7s8t9va/2/1/ops-mail",
        );
        check(
            GroupSummary {
                group: GROUP.into(),
                tier: 3,
                channel: "pager".into(),
            },
            "group/01JDQ3V5K8X2M9N4P6R7S8T9VB/3/pager",
        );
        check(
            LeaderGroupSummary {
                incident: INCIDENT.into(),
                group: GROUP.into(),
                tier: 1,
                channel: "hook".into(),
            },
            "01jdq3v5k8x2m9n4p6r7s8t9va/group/01JDQ3V5K8X2M9N4P6R7S8T9VB/1/hook",
        );
        check(
            Resolution {
                incident: INCIDENT.into(),
                channel: "hook".into(),
            },
            "01jdq3v5k8x2m9n4p6r7s8t9va/resolved/hook",
        );
        check(
            ApprovalRequest {
                incident: INCIDENT.into(),
                tier: 2,
                channel: "ops/mail".into(),
            },
            "01jdq3v5k8x2m9n4p6r7s8t9va/approval/2/ops/mail",
        );
        check(
            Withdrawal {
                incident: INCIDENT.into(),
                channel: "hook".into(),
            },
            "01jdq3v5k8x2m9n4p6r7s8t9va/withdrawn/hook",
        );
    }

    #[test]
    fn a_channel_keeps_its_slashes() {
        check(
            Round {
                incident: "i".into(),
                round: 1,
                tier: 1,
                channel: "a/b".into(),
            },
            "i/1/1/a/b",
        );
        check(
            Resolution {
                incident: "i".into(),
                channel: "a/b".into(),
            },
            "i/resolved/a/b",
        );
    }

    #[test]
    fn what_is_not_a_key_is_refused() {
        for bad in [
            "",
            "i",
            "i/1/1",
            "i/1/1/",
            "/1/1/a",
            "i/x/1/a",
            "i/+1/1/a",
            "i/01/1/a",
            "i/-1/1/a",
            "i/resolved/",
            "group/g/1",
            "group//1/a",
            "group/g/one/a",
            "i/group/g/1",
            "i/approval/1",
            "i/approval/x/a",
            "i/approval/01/a",
            "i/approval/1/",
            "i/withdrawn/",
        ] {
            assert_eq!(NotificationKey::parse(bad), None, "{bad:?}");
        }
    }
}

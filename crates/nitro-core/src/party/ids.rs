//! Objective ids: which objective, named by its kind and the channel it is about.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{json, ChannelId};

/// Which objective, named by the channel it is about; written `Kind-0x<channel id>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectiveId {
    /// Opening a ledger.
    DirectFund(ChannelId),
    /// Closing a ledger.
    DirectDefund(ChannelId),
    /// Funding a virtual channel.
    VirtualFund(ChannelId),
    /// Closing a virtual channel.
    VirtualDefund(ChannelId),
    /// Taking a channel to chain alone.
    ForceClose(ChannelId),
    /// Depositing more into an open ledger (one top-up of a ledger at a time).
    TopUp(ChannelId),
    /// Withdrawing part of a ledger by migrating it to a successor (named by the old ledger).
    Withdraw(ChannelId),
}

impl std::str::FromStr for ObjectiveId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, id) = s.split_once('-').ok_or_else(|| format!("objective id {s:?} is not Kind-0x<channel id>"))?;
        let id = ChannelId::from(json::decode_fixed::<32>(id)?);
        match kind {
            "DirectFund" => Ok(Self::DirectFund(id)),
            "DirectDefund" => Ok(Self::DirectDefund(id)),
            "VirtualFund" => Ok(Self::VirtualFund(id)),
            "VirtualDefund" => Ok(Self::VirtualDefund(id)),
            "ForceClose" => Ok(Self::ForceClose(id)),
            "TopUp" => Ok(Self::TopUp(id)),
            "Withdraw" => Ok(Self::Withdraw(id)),
            other => Err(format!("unknown objective kind {other:?}")),
        }
    }
}

impl Serialize for ObjectiveId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ObjectiveId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl ObjectiveId {
    /// The channel the objective is about.
    pub fn channel_id(&self) -> ChannelId {
        match *self {
            Self::DirectFund(c)
            | Self::DirectDefund(c)
            | Self::VirtualFund(c)
            | Self::VirtualDefund(c)
            | Self::ForceClose(c)
            | Self::TopUp(c) => c,
            Self::Withdraw(c) => c,
        }
    }
}

impl fmt::Display for ObjectiveId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Self::DirectFund(_) => "DirectFund",
            Self::DirectDefund(_) => "DirectDefund",
            Self::VirtualFund(_) => "VirtualFund",
            Self::VirtualDefund(_) => "VirtualDefund",
            Self::ForceClose(_) => "ForceClose",
            Self::TopUp(_) => "TopUp",
            Self::Withdraw(_) => "Withdraw",
        };
        write!(f, "{kind}-{}", self.channel_id())
    }
}

//! Consensus (ledger) channels: the leader proposes, the follower countersigns, and the
//! guarantees that fund virtual channels are locked and released by unanimous consensus.

mod consensus;
mod error;
mod event;
mod follower;
mod guarantees;
mod leader;
mod ledger;
mod messages;
mod queue;
mod record;
mod shared;

pub use consensus::ConsensusChannel;
pub use error::ChannelError;
pub use event::{LedgerEvent, Step};
pub use follower::{Approval, ApprovalPolicy, FollowerChannel, DEFAULT_REORDER_CAPACITY};
pub use guarantees::{GuaranteeManager, GuaranteeStatus};
pub use leader::LeaderChannel;
pub use ledger::{AssetOutcome, Balance, Guarantee, LedgerOutcome, OutcomeError, Proposal, ProposalError, Side, Slot};
pub(crate) use messages::bounded_reason;
pub use messages::{Countersignature, LedgerMessage, Rejection, SignedProposal, MAX_BATCH, MAX_REASON_LEN};
pub use queue::{ProposalQueue, QueuedProposal};
pub use record::{LedgerRecord, RoleRecord};

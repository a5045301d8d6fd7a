//! `canopy group new|invite|join|rekey|list`: private groups set up in a
//! minute. Files on disk only, no network; the groups themselves are
//! [`crate::groups`].

use std::path::PathBuf;

use canopy_common::proto::network::{Invite, NetworkError, NetworkName};
use clap::{Args, Subcommand};

use super::args::{parse_group_name, DataDir};
use crate::groups;

#[derive(Subcommand)]
pub enum GroupCommand {
    /// Create a group with a fresh secret key, this node as its first
    /// supernode, and print the invite to send to the members.
    New {
        /// The group's name: 1 to 32 of a-z, 0-9 and '-'.
        #[arg(value_parser = parse_group_name)]
        name: NetworkName,
        #[command(flatten)]
        place: GroupPlace,
        #[command(flatten)]
        data: DataDir,
    },
    /// Print again the invite to a group this node is in, to send to
    /// another member.
    Invite {
        /// The group's name, as `canopy group list` shows it.
        #[arg(value_parser = parse_group_name)]
        name: NetworkName,
        /// The IP address other members reach this machine at [default:
        /// the address of the route to the internet].
        #[arg(long, value_name = "IP")]
        host: Option<std::net::IpAddr>,
        #[command(flatten)]
        data: DataDir,
    },
    /// Join a group from the invite a member sent (a canopy-group: text).
    /// `canopy run` then runs it beside the public network.
    Join {
        /// The invite, in quotes: canopy-group:NAME?key=…&peer=…
        #[arg(value_parser = parse_invite)]
        invite: Invite,
        #[command(flatten)]
        place: GroupPlace,
        #[command(flatten)]
        data: DataDir,
    },
    /// Give a group a fresh key, to cut off whoever held the old one, and
    /// print the new invite for the members who stay. Running nodes switch
    /// within seconds; until a member has joined with the new invite, it is
    /// refused.
    Rekey {
        /// The group's name, as `canopy group list` shows it.
        #[arg(value_parser = parse_group_name)]
        name: NetworkName,
        /// The IP address other members reach this machine at [default:
        /// the address of the route to the internet].
        #[arg(long, value_name = "IP")]
        host: Option<std::net::IpAddr>,
        #[command(flatten)]
        data: DataDir,
    },
    /// List the groups this node is in, with their port and shared folders.
    List {
        #[command(flatten)]
        data: DataDir,
    },
}

/// Where a group's traffic and files go.
#[derive(Args)]
pub struct GroupPlace {
    /// UDP port for the group's traffic [default: the first free one from 4670].
    #[arg(long, value_name = "PORT")]
    port: Option<u16>,
    /// A folder to share with the group; repeat for several [default:
    /// DATA_DIR/networks/NAME/shared].
    #[arg(long = "share", value_name = "DIR")]
    share: Vec<PathBuf>,
    /// The IP address other members reach this machine at, for the invite
    /// [default: the address of the route to the internet].
    #[arg(long, value_name = "IP")]
    host: Option<std::net::IpAddr>,
}

impl GroupPlace {
    fn options(&self) -> groups::GroupOptions {
        groups::GroupOptions {
            port: self.port,
            share: self.share.clone(),
        }
    }
}

pub const HELP: &str = "\
A group in one minute:
  alice$ canopy group new family        # prints an invite: canopy-group:family?key=…
  bob$   canopy group join 'canopy-group:family?key=…&peer=…'
  both$  canopy run                     # public network + every joined group
Put files in the shared folder each command prints. Members see only each
other's group files; outsiders cannot connect to the group's port at all.
The invite holds the key: send it only to members, over a channel you trust.
To cut someone off: `canopy group rekey NAME`, and send the new invite to
the members who stay (`canopy group join` it again). Running nodes pick up
the new key within seconds. Or list the admitted peer ids in
DATA_DIR/networks/NAME/allow.txt (also re-read while running).";

fn parse_invite(text: &str) -> Result<Invite, String> {
    text.parse().map_err(|e: NetworkError| e.to_string())
}

fn print_invite(group: &groups::Group, host: Option<std::net::IpAddr>) -> anyhow::Result<()> {
    let host = host.unwrap_or_else(groups::likely_host);
    let invite = group.invite(host)?;
    println!("group {}: this node is {}", group.name, invite.members[0]);
    println!("shared with the group: {}", group.shared_folders());
    println!("invite (send it to members only; it holds the key):");
    println!("{invite}");
    if host.is_loopback() {
        println!("note: {host} reaches this machine only from itself; pass --host YOUR_IP for others");
    }
    Ok(())
}

/// `canopy group …`: files on disk only, no network.
pub fn run(command: GroupCommand) -> anyhow::Result<()> {
    match command {
        GroupCommand::New { name, place, data } => {
            let group = groups::create(&data.resolve()?, &name, &place.options())?;
            print_invite(&group, place.host)?;
            println!("run `canopy run` to start sharing with the group");
        }
        GroupCommand::Invite { name, host, data } => {
            print_invite(&groups::open(&data.resolve()?, &name)?, host)?;
        }
        GroupCommand::Rekey { name, host, data } => {
            let group = groups::rekey(&data.resolve()?, &name)?;
            println!("group {name} has a new key; whoever holds only the old one is cut off");
            print_invite(&group, host)?;
        }
        GroupCommand::Join { invite, place, data } => {
            let group = groups::join(&data.resolve()?, &invite, &place.options())?;
            let members = invite.members.len();
            println!(
                "joined group {} through {members} member{}; this node listens for it on port {}",
                group.name,
                if members == 1 { "" } else { "s" },
                group.settings.listen.port()
            );
            println!("shared with the group: {}", group.shared_folders());
            println!("run (or restart) `canopy run` to start sharing with the group");
        }
        GroupCommand::List { data } => {
            let groups = groups::list(&data.resolve()?);
            if groups.is_empty() {
                println!(
                    "no groups: `canopy group new NAME` makes one, `canopy group join INVITE` joins one"
                );
            }
            for group in groups {
                println!(
                    "{}  port {}  {}  sharing {}",
                    group.name,
                    group.settings.listen.port(),
                    format!("{:?}", group.settings.role).to_lowercase(),
                    group.shared_folders()
                );
            }
        }
    }
    Ok(())
}

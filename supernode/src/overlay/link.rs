//! Links to neighbour supernodes: asking for one and accepting one, carrying
//! it (one stream each way of [`OverlayMessage`]s), telling the horizon it
//! came and went, and checking what a neighbour sends against the caps: a
//! neighbour breaking them loses its link.

use super::*;
use canopy_common::proto::nat;
use std::collections::VecDeque;

/// Why a link we asked for did not come up. Only logged: the supernode is
/// left alone for [`RETRY_AFTER`] either way.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("cannot open a stream: {0}")]
    Stream(#[from] quinn::ConnectionError),
    #[error("cannot ask for a link: {0}")]
    Ask(#[source] NetError),
    #[error("full")]
    Full,
    #[error("did not accept a link ({0})")]
    Refused(#[source] NetError),
}

/// A link we asked for and got: its streams, and what both sides agreed.
struct Granted {
    send: SendStream,
    recv: RecvStream,
    features: u32,
    degree: u16,
}

/// What the horizon must learn of one peer's links.
enum LinkChange {
    /// A link that speaks keyword tables came up: tables start afresh.
    Tables(PeerAddr),
    /// The peer's link went, or one without tables replaced it: its
    /// tables are forgotten.
    NoTables(PeerId),
}

/// Link changes on their way from the neighbours map to the horizon.
///
/// Links of one peer replace each other (both sides linking at once, a
/// quick reconnect), and the horizon must end up agreeing with the map: a
/// stale "down" applied after a fresh "up" would leave a linked neighbour
/// without tables for good. Changes are queued under the state lock, in
/// the map's order, and applied in that order by whoever holds the
/// horizon's turn ([`Overlay::tell_horizon`]).
#[derive(Default)]
pub(super) struct LinkChanges {
    queued: VecDeque<LinkChange>,
    /// Changes ever queued: a change's ticket is this count once it is in.
    tickets: u64,
    applied: u64,
}

impl LinkChanges {
    /// Queues a change; its ticket, for [`Overlay::tell_horizon`].
    fn push(&mut self, change: LinkChange) -> u64 {
        self.queued.push_back(change);
        self.tickets += 1;
        self.tickets
    }
}

impl Overlay {
    /// Answers another supernode's [`Request::Link`] (`offer` is `None`)
    /// or [`Request::LinkWith`].
    pub async fn accept_link(
        self: &Arc<Self>,
        peer: PeerAddr,
        connection: &quinn::Connection,
        offer: Option<LinkOffer>,
        mut send: SendStream,
        recv: RecvStream,
    ) {
        let full = {
            let neighbours = &self.state().neighbours;
            neighbours.len() >= self.config.max_neighbours && !neighbours.contains_key(&peer.id)
        };
        if full || self.is_stopping() {
            let others = self.referrals(8);
            let _ = write_frame(&mut send, &LinkNotice::Full { others }).await;
            let _ = send.finish();
            return;
        }
        let (notice, features, degree) = match offer {
            None => (LinkNotice::Accepted, 0, 0),
            Some(offer) => (
                LinkNotice::AcceptedWith {
                    features: self.features(),
                    degree: self.degree(),
                },
                offer.features & self.features(),
                offer.degree,
            ),
        };
        if write_frame(&mut send, &notice).await.is_ok() {
            self.run_link(peer, connection, peer.id, (send, recv), features, degree)
                .await;
        }
    }

    /// Dials every candidate at once and links to the `wanted` with the
    /// shortest round trips; the others are hung up on. Every candidate
    /// must be in `connecting`; each leaves it here or in [`Self::link_over`].
    pub(super) async fn link_nearest(self: Arc<Self>, candidates: Vec<PeerAddr>, wanted: usize) {
        let found = self
            .endpoint
            .connect_nearest(&candidates, wanted, Duration::from_secs(5))
            .await;
        {
            let mut state = self.state();
            for (addr, reason) in &found.failed {
                tracing::debug!(peer = ?addr, %reason, "no link");
                state.failures.insert(addr.id, Instant::now());
            }
            for addr in found.failed.iter().map(|(addr, _)| addr).chain(&found.farther) {
                state.connecting.remove(&addr.id);
            }
        }
        for (addr, connection) in found.kept {
            tracing::debug!(peer = ?addr, rtt = ?connection.rtt(), "linking to a near supernode");
            tokio::spawn(self.clone().link_over(addr, connection));
        }
    }

    /// Asks for a link over a connection already up, and carries it.
    pub(super) async fn link_over(self: Arc<Self>, addr: PeerAddr, connection: quinn::Connection) {
        let asked = self.ask_for_link(addr, &connection).await;
        self.state().connecting.remove(&addr.id);
        match asked {
            // In a private network, a change of membership that drops
            // this neighbour closes the link's connection.
            Ok(Granted {
                send,
                recv,
                features,
                degree,
            }) => {
                let link = self.run_link(addr, &connection, self.me().id, (send, recv), features, degree);
                self.endpoint.guard(&connection, addr.id, link).await
            }
            Err(reason) => {
                tracing::debug!(peer = ?addr, %reason, "no link");
                self.state().failures.insert(addr.id, Instant::now());
            }
        }
    }

    /// Asks `addr` for a link with [`Request::LinkWith`], or the old way if
    /// it does not know that. A full supernode's referrals go into the
    /// host cache.
    async fn ask_for_link(
        &self,
        addr: PeerAddr,
        connection: &quinn::Connection,
    ) -> Result<Granted, LinkError> {
        let (mut send, mut recv) = connection.open_bi().await?;
        let offer = LinkOffer {
            listen: nat::shown_to(self.me().addr, addr.addr.ip()),
            features: self.features(),
            degree: self.degree(),
        };
        write_frame(&mut send, &Request::LinkWith(offer))
            .await
            .map_err(LinkError::Ask)?;
        let mut answer = read_frame::<LinkNotice>(&mut recv, MAX_CONTROL_FRAME).await;
        if answer.is_err() {
            // A supernode from before `LinkWith` resets that stream as
            // a bad request; ask again the old way on a new stream.
            (send, recv) = connection.open_bi().await?;
            let hello = LinkHello {
                listen: nat::shown_to(self.me().addr, addr.addr.ip()),
            };
            write_frame(&mut send, &Request::Link(hello))
                .await
                .map_err(LinkError::Ask)?;
            answer = read_frame::<LinkNotice>(&mut recv, MAX_CONTROL_FRAME).await;
        }
        let (features, degree) = match answer.map_err(LinkError::Refused)? {
            LinkNotice::Accepted => (0, 0),
            LinkNotice::AcceptedWith { features, degree } => (features & self.features(), degree),
            LinkNotice::Full { others } => {
                let me = self.me().id;
                let hosts = &mut self.state().hosts;
                for other in others.into_iter().take(MAX_HOSTS_PER_MESSAGE) {
                    if other.id != me {
                        hosts.saw(other, 60);
                    }
                }
                return Err(LinkError::Full);
            }
        };
        Ok(Granted {
            send,
            recv,
            features,
            degree,
        })
    }

    /// Carries one link, opened by `initiator`, until either side drops it.
    pub(super) async fn run_link(
        self: &Arc<Self>,
        peer: PeerAddr,
        connection: &quinn::Connection,
        initiator: PeerId,
        (mut send, mut recv): (SendStream, RecvStream),
        features: u32,
        degree: u16,
    ) {
        let (outbox, mut queued) = mpsc::channel::<OverlayMessage>(OUTBOX);
        let tables = features & FEATURE_KEYWORD_TABLES != 0;
        let notes = features & FEATURE_NOTES != 0;
        let link = self.next_link.fetch_add(1, Ordering::Relaxed);
        let ticket = {
            let mut state = self.state();
            if let Some(existing) = state.neighbours.get(&peer.id) {
                // Both sides linked at once. Each end keeps the link opened
                // by the smaller peer id, so both keep the same one.
                let preferred = self.me().id.min(peer.id);
                if initiator != preferred || existing.initiator == preferred {
                    return;
                }
            }
            state.neighbours.insert(
                peer.id,
                Neighbour {
                    addr: peer,
                    connection: connection.clone(),
                    outbox: outbox.clone(),
                    link,
                    initiator,
                    tables,
                    notes,
                    degree: degree.min(MAX_DEGREE),
                    degree_sent: 0,
                    table_budget: TokenBucket::full(TABLE_BYTES_PER_SECOND, TABLE_BURST, self.now()),
                },
            );
            state.hosts.saw(peer, 0);
            let change = if tables {
                LinkChange::Tables(peer)
            } else {
                LinkChange::NoTables(peer.id)
            };
            state.link_changes.push(change)
        };
        // Before reading a message: the neighbour's first tables need the
        // horizon to know its link.
        self.tell_horizon(ticket).await;
        tracing::info!(neighbour = ?peer, "linked to supernode");
        let _ = outbox.try_send(OverlayMessage::Supernodes {
            entries: self.host_message(),
        });
        let mut writer = tokio::spawn(async move {
            while let Some(message) = queued.recv().await {
                if write_frame(&mut send, &message).await.is_err() {
                    break;
                }
            }
            let _ = send.finish();
        });
        let mut stopping = self.stopping.subscribe();
        let stopped = loop {
            // One read per frame, kept across the stop signal: dropping a
            // half-finished read would lose bytes of the stream.
            let read = read_frame::<OverlayMessage>(&mut recv, MAX_CONTROL_FRAME);
            tokio::pin!(read);
            tokio::select! {
                message = &mut read => match message {
                    Ok(message) => {
                        if let Err(reason) = self.on_message(peer, link, message) {
                            tracing::warn!(neighbour = ?peer, %reason, "closing the link to a misbehaving supernode");
                            self.stats.bad_messages.fetch_add(1, Ordering::Relaxed);
                            break false;
                        }
                    }
                    Err(error) => {
                        if !matches!(error, NetError::Truncated) {
                            tracing::debug!(neighbour = ?peer, %error, "link ended");
                        }
                        break false;
                    }
                },
                _ = crate::stepped_down(&mut stopping) => break true,
            }
        };
        let unlinked = {
            let mut state = self.state();
            let current = state.neighbours.get(&peer.id).is_some_and(|n| n.link == link);
            if current {
                state.neighbours.remove(&peer.id);
            }
            current.then(|| state.link_changes.push(LinkChange::NoTables(peer.id)))
        };
        if let Some(ticket) = unlinked {
            self.tell_horizon(ticket).await;
            tracing::info!(neighbour = ?peer, "unlinked from supernode");
        }
        if stopped {
            // Let what is queued and the end of the stream reach the
            // neighbour, so it replaces this link at once.
            drop(outbox);
            if tokio::time::timeout(Duration::from_secs(1), &mut writer)
                .await
                .is_err()
            {
                writer.abort();
            }
        } else {
            writer.abort();
        }
    }

    /// Returns once link change `ticket` has reached the horizon. Whoever
    /// holds the horizon's turn applies the queue in order, one change at
    /// a time, taking the state lock and the horizon's each alone; the
    /// others wait for the turn asleep, and may find theirs already in.
    async fn tell_horizon(&self, ticket: u64) {
        let _turn = self.horizon_turn.lock().await;
        loop {
            let change = {
                let changes = &mut self.state().link_changes;
                if changes.applied >= ticket {
                    return;
                }
                match changes.queued.pop_front() {
                    Some(change) => change,
                    None => return,
                }
            };
            {
                let mut horizon = self.index.horizon().locked();
                match change {
                    LinkChange::Tables(peer) => {
                        if let Err(error) = horizon.link_up(peer.id) {
                            tracing::debug!(neighbour = ?peer, %error, "no keyword tables on this link");
                        }
                    }
                    LinkChange::NoTables(peer) => horizon.link_down(&peer),
                }
            }
            self.state().link_changes.applied += 1;
        }
    }

    pub(super) fn host_message(&self) -> Vec<canopy_common::proto::wire::HostEntry> {
        let me = self.me();
        let mut entries = self.state().hosts.message(me);
        if me.addr.ip().is_unspecified() {
            // Neighbours know us by the address our link came from.
            entries.retain(|entry| entry.addr.id != me.id);
        }
        entries
    }

    /// Handles one message from neighbour `from`; an error (a message
    /// breaking the caps) ends the link.
    pub(super) fn on_message(
        self: &Arc<Self>,
        from: PeerAddr,
        link: u64,
        message: OverlayMessage,
    ) -> Result<(), Misbehaviour> {
        let now = self.now();
        match message {
            OverlayMessage::Query(query) => {
                self.stats.queries_received.fetch_add(1, Ordering::Relaxed);
                query.query.check()?;
                let actions = self.route_query(Origin::Neighbour(from.id), query, now);
                if actions.is_empty() {
                    self.stats.duplicates_dropped.fetch_add(1, Ordering::Relaxed);
                }
                self.execute(actions);
            }
            OverlayMessage::Hits { id, hits } => {
                if hits.len() > usize::from(MAX_HITS) {
                    return Err(Misbehaviour::TooManyHits(hits.len()));
                }
                for hit in &hits {
                    hit.check()?;
                }
                let actions = self.state().router.on_hits(from.id, id, hits, now);
                self.execute(actions);
            }
            OverlayMessage::Supernodes { entries } => {
                let me = self.me().id;
                let hosts = &mut self.state().hosts;
                for entry in entries.into_iter().take(MAX_HOSTS_PER_MESSAGE) {
                    if entry.addr.id != me && !entry.addr.addr.ip().is_unspecified() {
                        hosts.saw(entry.addr, u64::from(entry.age_secs));
                    }
                }
            }
            OverlayMessage::KeywordTable { level, update, more } => {
                self.spend_table_budget(from.id, link, update.cost())?;
                // The frame: the update's own, plus the variant, level and more bytes.
                let bytes = encoded_len(&update) + 3;
                self.stats
                    .table_bytes_received
                    .fetch_add(bytes, Ordering::Relaxed);
                let mut horizon = self.index.horizon().locked();
                if let Err(error) = horizon.on_update(from.id, level, &update, more) {
                    // Its tables are forgotten: it is flooded, never pruned.
                    tracing::debug!(neighbour = ?from, %error, "refused a keyword table update");
                    self.stats.table_updates_refused.fetch_add(1, Ordering::Relaxed);
                }
            }
            OverlayMessage::HitNotes { id, votes, tags } => {
                if votes.len() > MAX_VOTES_PER_HIT_NOTES {
                    return Err(Misbehaviour::TooManyVotes(votes.len()));
                }
                if tags.len() > MAX_HASHES_PER_NOTES_ASK {
                    return Err(Misbehaviour::TooManyTags(tags.len()));
                }
                self.pass_notes_on(id, votes, tags, now);
            }
            OverlayMessage::Degree { neighbours } => match self.state().neighbours.get_mut(&from.id) {
                Some(neighbour) if neighbour.link == link && neighbour.tables => {
                    neighbour.degree = neighbours.min(MAX_DEGREE);
                }
                Some(neighbour) if neighbour.link == link => {
                    return Err(Misbehaviour::NoTablesAgreed("a degree"));
                }
                _ => {}
            },
        }
        Ok(())
    }

    /// Charges a neighbour's table bytes to its budget; over budget, or
    /// tables on a link that did not agree to them, is an error (the link
    /// closes). Updates from a superseded link of the same peer are not
    /// charged here and are refused by the horizon if they do not fit.
    pub(super) fn spend_table_budget(
        &self,
        from: PeerId,
        link: u64,
        cost: usize,
    ) -> Result<(), Misbehaviour> {
        let mut state = self.state();
        let Some(neighbour) = state.neighbours.get_mut(&from).filter(|n| n.link == link) else {
            return Ok(());
        };
        if !neighbour.tables {
            return Err(Misbehaviour::NoTablesAgreed("a keyword table"));
        }
        if !neighbour.table_budget.take(cost as f64, self.now()) {
            return Err(Misbehaviour::TablesTooFast);
        }
        Ok(())
    }

    /// Queues a message for a neighbour; false if it could not be (no
    /// such neighbour, or its outbox is full).
    pub(super) fn send_to(&self, peer: PeerId, message: OverlayMessage) -> bool {
        let outbox = self.state().neighbours.get(&peer).map(|n| n.outbox.clone());
        // A neighbour that cannot keep up loses messages, not our memory.
        outbox.is_some_and(|outbox| outbox.try_send(message).is_ok())
    }
}

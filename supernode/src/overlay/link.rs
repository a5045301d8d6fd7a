//! Links to neighbour supernodes: asking for one and accepting one, carrying
//! it (one stream each way of [`OverlayMessage`]s), and checking what a
//! neighbour sends against the caps: a neighbour breaking them loses its link.

use super::*;
use canopy_common::proto::nat;

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
            let neighbours = self.neighbours.locked();
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
        for (addr, reason) in &found.failed {
            tracing::debug!(peer = ?addr, %reason, "no link");
            self.failures.locked().insert(addr.id, Instant::now());
        }
        let mut connecting = self.connecting.locked();
        for addr in found.failed.iter().map(|(addr, _)| addr).chain(&found.farther) {
            connecting.remove(&addr.id);
        }
        drop(connecting);
        for (addr, connection) in found.kept {
            tracing::debug!(peer = ?addr, rtt = ?connection.rtt(), "linking to a near supernode");
            tokio::spawn(self.clone().link_over(addr, connection));
        }
    }

    /// Asks for a link over a connection already up, and carries it.
    pub(super) async fn link_over(self: Arc<Self>, addr: PeerAddr, connection: quinn::Connection) {
        let outcome = async {
            let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
            let offer = LinkOffer {
                listen: nat::shown_to(self.me().addr, addr.addr.ip()),
                features: self.features(),
                degree: self.degree(),
            };
            write_frame(&mut send, &Request::LinkWith(offer))
                .await
                .map_err(|e| e.to_string())?;
            let mut answer = read_frame::<LinkNotice>(&mut recv, MAX_CONTROL_FRAME).await;
            if answer.is_err() {
                // A supernode from before `LinkWith` resets that stream as
                // a bad request; ask again the old way on a new stream.
                (send, recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
                let hello = LinkHello {
                    listen: nat::shown_to(self.me().addr, addr.addr.ip()),
                };
                write_frame(&mut send, &Request::Link(hello))
                    .await
                    .map_err(|e| e.to_string())?;
                answer = read_frame::<LinkNotice>(&mut recv, MAX_CONTROL_FRAME).await;
            }
            match answer {
                Ok(LinkNotice::Accepted) => Ok((connection, send, recv, 0, 0)),
                Ok(LinkNotice::AcceptedWith { features, degree }) => {
                    Ok((connection, send, recv, features & self.features(), degree))
                }
                Ok(LinkNotice::Full { others }) => {
                    let mut hosts = self.hosts.locked();
                    for other in others.into_iter().take(MAX_HOSTS_PER_MESSAGE) {
                        if other.id != self.me().id {
                            hosts.saw(other, 60);
                        }
                    }
                    Err("full".to_string())
                }
                Err(error) => Err(format!("did not accept a link ({error})")),
            }
        }
        .await;
        self.connecting.locked().remove(&addr.id);
        match outcome {
            // In a private network, a change of membership that drops
            // this neighbour closes the link's connection.
            Ok((connection, send, recv, features, degree)) => {
                let link = self.run_link(addr, &connection, self.me().id, (send, recv), features, degree);
                self.endpoint.guard(&connection, addr.id, link).await
            }
            Err(reason) => {
                tracing::debug!(peer = ?addr, %reason, "no link");
                self.failures.locked().insert(addr.id, Instant::now());
            }
        }
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
        let link = self.next_link.fetch_add(1, Ordering::Relaxed);
        {
            let mut neighbours = self.neighbours.locked();
            if let Some(existing) = neighbours.get(&peer.id) {
                // Both sides linked at once. Each end keeps the link opened
                // by the smaller peer id, so both keep the same one.
                let preferred = self.me().id.min(peer.id);
                if initiator != preferred || existing.initiator == preferred {
                    return;
                }
            }
            neighbours.insert(
                peer.id,
                Neighbour {
                    addr: peer,
                    connection: connection.clone(),
                    outbox: outbox.clone(),
                    link,
                    initiator,
                    tables,
                    degree: degree.min(MAX_DEGREE),
                    degree_sent: 0,
                    table_budget: TokenBucket::full(TABLE_BYTES_PER_SECOND, TABLE_BURST, self.now()),
                },
            );
            // Under the neighbours lock, so link ups and downs of one peer
            // reach the horizon in the order the links replace each other.
            let mut horizon = self.index.horizon().locked();
            if tables {
                if let Err(error) = horizon.link_up(peer.id) {
                    tracing::debug!(neighbour = ?peer, %error, "no keyword tables on this link");
                }
            } else {
                horizon.link_down(&peer.id);
            }
        }
        self.hosts.locked().saw(peer, 0);
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
        {
            let mut neighbours = self.neighbours.locked();
            if neighbours.get(&peer.id).is_some_and(|n| n.link == link) {
                neighbours.remove(&peer.id);
                self.index.horizon().locked().link_down(&peer.id);
                tracing::info!(neighbour = ?peer, "unlinked from supernode");
            }
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

    pub(super) fn host_message(&self) -> Vec<canopy_common::proto::wire::HostEntry> {
        let me = self.me();
        let mut entries = self.hosts.locked().message(me);
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
                let actions = self.router.locked().on_hits(from.id, id, hits, now);
                self.execute(actions);
            }
            OverlayMessage::Supernodes { entries } => {
                let me = self.me().id;
                let mut hosts = self.hosts.locked();
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
            OverlayMessage::Degree { neighbours } => {
                let mut all = self.neighbours.locked();
                match all.get_mut(&from.id) {
                    Some(neighbour) if neighbour.link == link && neighbour.tables => {
                        neighbour.degree = neighbours.min(MAX_DEGREE);
                    }
                    Some(neighbour) if neighbour.link == link => {
                        return Err(Misbehaviour::NoTablesAgreed("a degree"));
                    }
                    _ => {}
                }
            }
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
        let mut all = self.neighbours.locked();
        let Some(neighbour) = all.get_mut(&from).filter(|n| n.link == link) else {
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
        let outbox = self.neighbours.locked().get(&peer).map(|n| n.outbox.clone());
        // A neighbour that cannot keep up loses messages, not our memory.
        outbox.is_some_and(|outbox| outbox.try_send(message).is_ok())
    }
}

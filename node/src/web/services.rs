//! What `canopy run` serves beside a node: the metrics endpoint, the desktop
//! app with its download manager, and the HTTP gateway. They are attached
//! to a running [`Node`] from outside, through its accessors (in the spirit
//! of iroh's `Router::builder(endpoint).accept(…)`); the node knows none of
//! them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use canopy_common::proto::election::Profile;

use super::{api, auth, control, gateway, serve_app, serve_gateway, Served, UiConfig, WebError};
use crate::download_manager::Downloads;
use crate::Node;

/// Which services to attach.
#[derive(Debug, Clone, Default)]
pub struct ServicesConfig {
    /// Serve metrics for monitoring and `canopy status` here.
    pub control: Option<SocketAddr>,
    /// What the start-up probe measured, reported in the metrics.
    pub profile: Option<Profile>,
    /// Run a download manager saving into this folder (the desktop app's).
    pub downloads: Option<PathBuf>,
    /// Downloads that run at once, more waiting in the queue (`None`:
    /// [`crate::download_manager::DEFAULT_MAX_ACTIVE`]).
    pub max_active_downloads: Option<usize>,
    /// Serve the desktop app (needs `downloads`).
    pub ui: Option<UiConfig>,
    /// Serve shared content over HTTP here.
    pub gateway: Option<SocketAddr>,
}

/// Why a service could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    #[error("cannot serve metrics on {addr}: {source}")]
    Control {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Web(#[from] WebError),
}

/// The services attached to one node, while they serve.
pub struct Services {
    control: Option<(SocketAddr, control::ServeTask)>,
    downloads: Option<Downloads>,
    /// The private groups' download managers ([`Services::attach_group`]).
    group_downloads: Vec<Downloads>,
    app: Option<Arc<api::App>>,
    ui: Option<Served>,
    gateway: Option<Served>,
}

impl Services {
    /// Starts what `config` asks for beside `node`.
    pub async fn attach(node: &Node, config: ServicesConfig) -> Result<Services, ServicesError> {
        let data_dir = node.data_dir();
        let control = match config.control {
            Some(addr) => {
                let view = control::NodeView {
                    context: node.context().clone(),
                    leaf_status: node.leaf_status(),
                    profile: config.profile.clone(),
                    started: Instant::now(),
                    admission: node.admission().clone(),
                };
                Some(
                    control::start(addr, data_dir, view)
                        .await
                        .map_err(|source| ServicesError::Control { addr, source })?,
                )
            }
            None => None,
        };
        let downloads = config.downloads.clone().map(|folder| {
            let downloads = Downloads::start(
                node.endpoint().clone(),
                node.context().clone(),
                node.searcher().clone(),
                data_dir,
                folder,
            );
            // Before the saved queue starts moving (it waits a moment), so
            // a node without the app keeps the limit too.
            if let Some(limit) = config.max_active_downloads {
                downloads.set_max_active(limit);
            }
            downloads
        });
        let gateway = match config.gateway {
            Some(addr) => Some(
                serve_gateway(
                    addr,
                    gateway::Gateway {
                        context: node.context().clone(),
                    },
                )
                .await?,
            ),
            None => None,
        };
        let ui = match (&config.ui, &downloads) {
            (Some(ui), Some(downloads)) => {
                let key = auth::load_or_create_key(data_dir).map_err(|source| WebError::Key {
                    path: data_dir.join(auth::KEY_FILE),
                    source,
                })?;
                let app = Arc::new(api::App::new(api::AppParts {
                    key,
                    password: ui.password.clone(),
                    context: node.context().clone(),
                    leaf_status: node.leaf_status(),
                    peer: node.peer_addr(),
                    role_reason: ui.role_reason.clone(),
                    downloads: downloads.clone(),
                    folders: node.folders().clone(),
                    searcher: node.searcher().clone(),
                    settings: ui.settings.clone(),
                    settings_file: ui.settings_file.clone(),
                    votes: node.votes().clone(),
                }));
                if let Some(gateway) = &gateway {
                    let _ = app.gateway.set(gateway.addr);
                }
                Some((serve_app(ui, app.clone(), data_dir).await?, app))
            }
            _ => None,
        };
        let (ui, app) = ui.unzip();
        Ok(Services {
            control,
            downloads,
            group_downloads: Vec::new(),
            app,
            ui,
            gateway,
        })
    }

    /// Lets the desktop app search and download within the private group
    /// `name` run by `node`: a download manager of its own (its list in the
    /// group's data folder, files saved in the app's download folder), and
    /// its searches. Nothing without the app.
    pub fn attach_group(&mut self, name: &str, node: &Node) {
        let (Some(app), Some(public)) = (&self.app, &self.downloads) else {
            return;
        };
        let downloads = Downloads::start(
            node.endpoint().clone(),
            node.context().clone(),
            node.searcher().clone(),
            node.data_dir(),
            public.folder(),
        );
        downloads.set_max_active(public.max_active());
        app.add_group(
            name,
            api::GroupSide {
                searcher: node.searcher().clone(),
                downloads: downloads.clone(),
            },
        );
        self.group_downloads.push(downloads);
    }

    /// Where metrics are served, if they are.
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control.as_ref().map(|(addr, _)| *addr)
    }

    /// The download manager, if one was attached.
    pub fn downloads(&self) -> Option<&Downloads> {
        self.downloads.as_ref()
    }

    /// Where the desktop app is served, if it is.
    pub fn ui_addr(&self) -> Option<SocketAddr> {
        self.ui.as_ref().map(|served| served.addr)
    }

    /// Where the HTTP gateway listens, if it does.
    pub fn gateway_addr(&self) -> Option<SocketAddr> {
        self.gateway.as_ref().map(|served| served.addr)
    }

    /// Stops every service: downloads first, with their part files brought
    /// up to date, so the next start resumes with nothing lost.
    pub async fn shut_down(mut self) {
        if let Some(downloads) = self.downloads.take() {
            downloads.shut_down().await;
        }
        for downloads in self.group_downloads.drain(..) {
            downloads.shut_down().await;
        }
        drop(self.ui.take());
        drop(self.gateway.take());
        drop(self.control.take());
    }
}

//! Builds the application from settings: storage, migrations, the ticket writer, the HTTP server.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_http::error::DispatchError;
use actix_http::{Extensions, HttpService, KeepAlive};
use actix_service::{fn_service, map_config, IntoServiceFactory, ServiceFactoryExt};
use actix_web::dev::{AppConfig, Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::rt::net::TcpStream;
use actix_web::{web, App};
use anyhow::Context;
use lettre::message::Mailbox;
use secrecy::ExposeSecret;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tracing_actix_web::TracingLogger;

use crate::abuse::{RateLimits, Refusals};
use crate::classify::Classifier;
use crate::config::{EmailTransport, Settings};
use crate::email::{AckContext, Mailer};
use crate::form_token::FormTokens;
use crate::github::GithubClient;
use crate::http::{
    limit_head, observe_latency, request_id_header, routes, security_headers, track_handler, AppState, ClientResolver,
    DeadlineStream, Deadlines, DeliveryConfig, RequestSpan,
};
use crate::metrics::Metrics;
use crate::outbox::{Deliverer, DeliveryContext, GithubFiling, Pacer, RetryPolicy};
use crate::store::{self, Store, TicketWriter};
use crate::submit::Submitter;
use crate::templates::Templates;

/// A built, bound, not yet running service.
pub struct Application {
    port: u16,
    server: Server,
    store: Arc<dyn Store>,
    writers: Vec<JoinHandle<()>>,
    deliverer: Deliverer,
    shutdown: watch::Sender<bool>,
    delivery_task: Option<JoinHandle<()>>,
    pruner: JoinHandle<()>,
    refusals: Arc<Refusals>,
}

/// How long an idle kept-alive connection stays open.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// How often rate limiters forget clients whose allowance has fully recovered.
const PRUNE_EVERY: Duration = Duration::from_secs(30);

async fn prune_limits(limits: Arc<RateLimits>, refusals: Arc<Refusals>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                limits.prune();
                refusals.prune();
                crate::telemetry::report_thinned();
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// The delivery worker's parts, from the settings.
pub fn delivery_context(
    settings: &Settings,
    store: Arc<dyn Store>,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<DeliveryContext> {
    let from: Mailbox = settings.email.from.parse().context("email.from")?;
    let reply_to = match &settings.email.reply_to {
        Some(r) => r.parse().context("email.reply_to")?,
        None => from.clone(),
    };
    Ok(DeliveryContext {
        store,
        mailer: Mailer::from_settings(&settings.email)?,
        ack: AckContext {
            from,
            reply_to,
            site_name: settings.server.site_name.clone(),
            public_url: settings.server.public_url(),
        },
        templates: Templates::new(),
        acks_per_email: settings.limits.acks_per_email,
        acks_per_domain: settings.limits.acks_per_domain,
        metrics,
        retry: RetryPolicy::default(),
        lease: Duration::from_secs(settings.delivery.lease_seconds),
        poll: Duration::from_secs(settings.delivery.poll_seconds),
        wake,
        github: github_filing(settings)?,
    })
}

/// GitHub filing when a token and at least one route are configured.
fn github_filing(settings: &Settings) -> anyhow::Result<Option<GithubFiling>> {
    let gh = &settings.github;
    let Ok(token) = gh.filing_token() else {
        return Ok(None);
    };
    Ok(Some(GithubFiling {
        client: GithubClient::new(
            gh.api_url.as_str(),
            token.clone(),
            Duration::from_secs(gh.timeout_seconds),
        )?,
        routes: gh.routes.clone(),
        decision_labels: gh.decision_labels.clone(),
        pacer: gh.pacing.then(|| Pacer::new(gh.per_minute, gh.per_hour)),
    }))
}

/// Opens the database and applies pending migrations.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    let store = store::connect(&settings.database.url, settings.database.max_connections)
        .await
        .context("opening the database (database.url)")?;
    store.migrate().await.context("applying database migrations")?;
    Ok(store)
}

/// What delivery is configured to do, and what is missing, in words for health and the start-up log.
pub fn delivery_config(settings: &Settings) -> DeliveryConfig {
    let email_detail = match settings.email.transport {
        EmailTransport::File => format!("file transport writing to {}", settings.email.file_dir.display()),
        EmailTransport::Smtp => "smtp transport".to_owned(),
    };
    let github_missing = settings.github.filing_token().err().map(|why| why.to_string());
    DeliveryConfig {
        email_detail,
        github_missing,
    }
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let store = open_store(&settings).await?;
        let classifier = Arc::new(
            Classifier::load(
                settings.classify.rules_file.as_deref(),
                settings.classify.model_file.as_deref(),
            )
            .context("loading classify.rules_file and classify.model_file")?,
        );
        // SQLite admits one writer at a time; PostgreSQL gains from a second building the next batch.
        let writer_count = if store.backend() == store::Backend::Sqlite {
            1
        } else {
            2
        };
        let wake = Arc::new(Notify::new());
        let (writer, writers) = TicketWriter::spawn(
            Arc::clone(&store),
            settings.database.max_batch,
            writer_count,
            Arc::clone(&wake),
        );
        let submitter = Submitter::new(
            writer,
            classifier,
            settings.tickets.reference_prefix.clone(),
            settings.github.file_unsupported,
        );

        let delivery = delivery_config(&settings);
        if let Some(missing) = &delivery.github_missing {
            tracing::warn!(
                "GitHub filing is not configured ({missing}); filing jobs wait in the outbox and nothing is lost"
            );
        }
        if settings.server.form_secret.is_none() {
            tracing::info!("server.form_secret is not set: form tokens are signed with a key drawn at start (set it when running several instances)");
        }

        store
            .listen_for_jobs(Arc::clone(&wake))
            .await
            .context("listening for new jobs")?;
        let metrics = Arc::new(Metrics::default());
        let deliverer = Deliverer::new(delivery_context(
            &settings,
            Arc::clone(&store),
            Arc::clone(&wake),
            Arc::clone(&metrics),
        )?);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let delivery_task = settings
            .delivery
            .enabled
            .then(|| tokio::spawn(deliverer.clone().run(shutdown_rx)));

        let refusals = Arc::new(Refusals::new(settings.limits.max_tracked_clients));
        let limits = Arc::new(RateLimits::new(&settings.limits));
        let pruner = tokio::spawn(prune_limits(
            Arc::clone(&limits),
            Arc::clone(&refusals),
            shutdown.subscribe(),
        ));
        let state = web::Data::new(AppState {
            store: Arc::clone(&store),
            submitter,
            templates: Templates::new(),
            form_tokens: FormTokens::new(settings.server.form_secret.as_ref()),
            site_name: settings.server.site_name.clone(),
            delivery_config: delivery,
            min_fill_seconds: settings.limits.min_fill_seconds,
            clients: ClientResolver::new(settings.server.trusted_proxies.clone()),
            limits,
            refusals: Arc::clone(&refusals),
            request_timeout: Duration::from_secs(settings.server.request_timeout_seconds),
            webhook_secret: settings
                .webhook
                .github_secret
                .clone()
                .filter(|s| !s.expose_secret().is_empty()),
            ops: crate::ops::Ops::new(Arc::clone(&store), Some(Arc::clone(&wake))),
            delivery_wake: Arc::clone(&wake),
            metrics,
            own_origin: url::Url::parse(&settings.server.public_url())
                .map(|u| u.origin().ascii_serialization())
                .unwrap_or_default(),
            decoys: crate::abuse::Decoys::default(),
        });

        let listener = TcpListener::bind(settings.server.listen)
            .with_context(|| format!("binding server.listen = {}", settings.server.listen))?;
        let port = listener.local_addr()?.port();
        let workers = match settings.server.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let request_timeout = Duration::from_secs(settings.server.request_timeout_seconds);
        let deadlines = Deadlines {
            limit: request_timeout,
            // Longer than keep-alive, which closes an ordinary idle connection first.
            idle_limit: KEEP_ALIVE + request_timeout,
        };
        let local_addr = listener.local_addr()?;
        // actix-web's HttpServer, assembled by hand so that each connection's stream can be
        // wrapped: its deadlines cover every request, not only the first (see http::conn).
        let server = Server::build()
            .workers(workers)
            .max_concurrent_connections(settings.server.max_connections.div_ceil(workers))
            .shutdown_timeout(30)
            .disable_signals()
            .listen("intake", listener, move || {
                let state = state.clone();
                let app = App::new()
                    .wrap(from_fn(limit_head))
                    .wrap(from_fn(request_id_header))
                    .wrap(security_headers())
                    .wrap(TracingLogger::<RequestSpan>::new())
                    // Outermost: times everything, and works out the route pattern for the span.
                    .wrap(from_fn(observe_latency))
                    .wrap(from_fn(track_handler))
                    .app_data(state)
                    .configure(routes);
                let app = app.into_factory().map_err(|e: actix_web::Error| e.error_response());
                fn_service(move |io: TcpStream| {
                    let peer = io.peer_addr().ok();
                    let _ = io.set_nodelay(true);
                    std::future::ready(Ok::<_, DispatchError>((DeadlineStream::new(io, deadlines), peer)))
                })
                .and_then(
                    HttpService::build()
                        .keep_alive(KeepAlive::Timeout(KEEP_ALIVE))
                        .client_request_timeout(request_timeout)
                        .client_disconnect_timeout(Duration::from_secs(1))
                        .local_addr(local_addr)
                        .on_connect_ext(|io: &DeadlineStream<TcpStream>, ext: &mut Extensions| {
                            ext.insert(io.handle());
                        })
                        .h1(map_config(app, |_| AppConfig::default())),
                )
            })?
            .run();
        tracing::info!(port, backend = %store.backend(), "intake listening");
        Ok(Application {
            port,
            server,
            store,
            writers,
            deliverer,
            shutdown,
            delivery_task,
            pruner,
            refusals,
        })
    }

    /// Refused clients so far, per reason.
    pub fn refusals(&self) -> Arc<Refusals> {
        Arc::clone(&self.refusals)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }

    /// The delivery worker, for tests that drive delivery step by step.
    pub fn deliverer(&self) -> Deliverer {
        self.deliverer.clone()
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped through the handle; in-flight requests finish first.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Application {
            server,
            writers,
            shutdown,
            delivery_task,
            pruner,
            ..
        } = self;
        server.await?;
        // Requests are finished; let the delivery in flight finish too, then stop.
        let _ = shutdown.send(true);
        let _ = pruner.await;
        if let Some(task) = delivery_task {
            let _ = tokio::time::timeout(Duration::from_secs(60), task).await;
        }
        // The server's handlers held the only senders: the writers finish what is queued and stop.
        for w in writers {
            let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
        }
        Ok(())
    }
}

/// Runs until SIGTERM or Ctrl-C, then stops gracefully.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    let handle = app.handle();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing requests in flight");
        handle.stop(true).await;
    });
    app.run_until_stopped().await.context("running the HTTP server")
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

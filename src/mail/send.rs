//! Sending one mail of the outbox over SMTP (lettre, tokio and rustls), and
//! recording the attempt with the job's next step in one transaction.

use jiff::Timestamp;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use redb::ReadableTable;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use super::outbox::SendMail;
use super::outbox::{INTERFACE, Mail, State, job_name, open_key};
use super::outbox::{MAIL_OPEN, MAILS};
use super::rules::{AfterFailure, after_failure};
use crate::app::App;
use crate::clock;
use crate::config::{MailPolicy, Security, Smtp};
use crate::executions::{self, Category, Level, LogLine};
use crate::jobs;
use crate::jobs::{JobKey, JobKind};
use crate::net::Trust;
use crate::store::{self, StoreError, Txn};

// The id and name are stored and pinned (src/golden.rs): never change them.
impl JobKind for SendMail {
    const ID: u32 = 2;
    const NAME: &'static str = "send_mail";

    fn target(&self) -> String {
        "smtp".to_string()
    }

    async fn run(self, app: &App, _key: JobKey) -> Result<jobs::Ran, StoreError> {
        run(app, self.id).await
    }
}

/// Why an attempt failed, and the log category that tells whom to call.
#[derive(Debug)]
pub struct SendError {
    pub category: Category,
    pub message: String,
}

async fn send_smtp(
    smtp: &Smtp,
    from: &str,
    mail: &Mail,
    subject: String,
    body: String,
    now: jiff::Timestamp,
) -> Result<(), SendError> {
    let config_error = |message: String| SendError {
        category: Category::Configuration,
        message,
    };
    let message = lettre::Message::builder()
        .from(
            from.parse()
                .map_err(|e| config_error(format!("smtp.from {from:?}: {e}")))?,
        )
        .to(mail.to.parse().map_err(|e| SendError {
            category: Category::Mapping,
            message: format!("recipient {:?}: {e}", mail.to),
        })?)
        .subject(subject)
        // The same id at every attempt: a server that took it once drops a repeat.
        .message_id(Some(format!(
            "<{}@{}>",
            mail.id,
            from.rsplit_once('@')
                .map_or("herald.invalid", |(_, domain)| domain.trim_end_matches('>'))
        )))
        // Herald's wall clock, as the log lines show it.
        .date(std::time::SystemTime::from(clock::wall_of(now)))
        // MIME 1.0, text/plain in UTF-8 with the transfer encoding that fits
        // the text (7bit, quoted-printable or base64), as mail systems expect.
        .header(lettre::message::header::MIME_VERSION_1_0)
        .header(lettre::message::header::ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| SendError {
            category: Category::Technical,
            message: format!("building the message: {e}"),
        })?;
    let trust = match &smtp.ca_pem {
        Some(pem) => Some(trust_of(pem)?),
        None => None,
    };
    let smtp_error = |e: lettre::transport::smtp::Error| {
        let code = e.status().map(|c| c.to_string());
        let (category, what) = diagnose(code.as_deref(), &chain(&e), e.is_tls(), e.is_timeout(), smtp);
        let message = format!("{what} ({}:{}): {}", smtp.host, smtp.port, chain(&e));
        SendError { category, message }
    };
    // lettre's connection, step by step (its transport would not let the
    // certificate be checked as `Trust` does).
    let hello = ClientId::default();
    let wrapper = match smtp.security {
        Security::Tls => Some(tls_parameters(smtp)?),
        _ => None,
    };
    let mut conn = AsyncSmtpConnection::connect_tokio1(
        (smtp.host.as_str(), smtp.port),
        Some(smtp.timeout),
        &hello,
        wrapper,
        None,
    )
    .await
    .map_err(smtp_error)?;
    if smtp.security == Security::Starttls {
        conn.starttls(tls_parameters(smtp)?, &hello).await.map_err(smtp_error)?;
    }
    if let Some(trust) = &trust {
        // Before anything is said over it: the server's certificate.
        let chain: Vec<CertificateDer<'_>> = conn
            .certificate_chain()
            .map_err(smtp_error)?
            .into_iter()
            .map(CertificateDer::from)
            .collect();
        let name = ServerName::try_from(smtp.host.clone()).map_err(|e| config_error(format!("smtp.host: {e}")))?;
        if let Err(e) = trust.check(&chain, &name) {
            conn.abort().await;
            return Err(SendError {
                category: Category::Configuration,
                message: format!(
                    "the mail server's TLS certificate is not trusted ({}:{}): {e}; smtp.ca_file must hold \
                     the CA that issued it, or the server's own (self-signed) certificate, and smtp.host a name in it",
                    smtp.host, smtp.port
                ),
            });
        }
    }
    if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
        let credentials = Credentials::new(user.clone(), password.0.clone());
        conn.auth(DEFAULT_MECHANISMS, &credentials).await.map_err(smtp_error)?;
    }
    let sent = conn.send(message.envelope(), &message.formatted()).await;
    let _ = conn.quit().await;
    sent.map(|_| ()).map_err(smtp_error)
}

/// What `smtp.ca_file` makes trusted (see [`Trust`]).
fn trust_of(pem: &[u8]) -> Result<Trust, SendError> {
    let config_error = |message: String| SendError {
        category: Category::Configuration,
        message,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| config_error(format!("smtp.ca_file: {e}")))?;
    Trust::new(&certs).map_err(|e| config_error(format!("smtp.ca_file: {e}")))
}

/// TLS with the public roots and, for an on-site server, those of
/// `smtp.ca_file`. With a `ca_file`, lettre checks the name and the
/// handshake, and [`Trust`] the certificate once the handshake is done.
fn tls_parameters(smtp: &Smtp) -> Result<TlsParameters, SendError> {
    let config_error = |what: String| SendError {
        category: Category::Configuration,
        message: what,
    };
    let mut params = TlsParameters::builder(smtp.host.clone());
    if let Some(pem) = &smtp.ca_pem {
        let roots = Certificate::from_pem(pem).map_err(|e| config_error(format!("smtp.ca_file: {e}")))?;
        params = params.add_root_certificate(roots).dangerous_accept_invalid_certs(true);
    }
    params.build().map_err(|e| config_error(format!("smtp.host: {e}")))
}

/// The error and its causes in one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// What went wrong with an SMTP exchange, whom to call, and what to set:
/// from the server's reply code and the error's text.
fn diagnose(code: Option<&str>, text: &str, tls: bool, timeout: bool, smtp: &Smtp) -> (Category, &'static str) {
    let lower = text.to_ascii_lowercase();
    let config = Category::Configuration;
    if lower.contains("certificate") || lower.contains("unknownissuer") {
        return (
            config,
            "the mail server's TLS certificate is not trusted; for a private CA or a self-signed \
             certificate set smtp.ca_file to its PEM, and check that smtp.host is the name in it",
        );
    }
    if lower.contains("starttls") || (code == Some("530") && lower.contains("tls")) {
        return match smtp.security {
            Security::None => (
                config,
                "the mail server demands TLS before it takes mail; set smtp.security = \"starttls\" \
                 (or \"tls\" on port 465)",
            ),
            _ => (
                config,
                "the mail server does not offer STARTTLS; set smtp.security = \"tls\" for implicit TLS, \
                 or check smtp.port",
            ),
        };
    }
    match code {
        Some("530") if smtp.username.is_none() => (
            config,
            "the mail server demands a login; set smtp.username and smtp.password (or smtp.password_file)",
        ),
        Some("530" | "534" | "535" | "538") => (config, "authentication failed; check smtp.username and the password"),
        Some(c) if c.starts_with('5') => (config, "the mail server refused the mail"),
        _ if tls => (
            config,
            "TLS with the mail server failed; check smtp.security and smtp.port (STARTTLS is usually 587, \
             implicit TLS 465)",
        ),
        _ if timeout => (Category::External, "the mail server did not answer in time"),
        _ => (Category::External, "could not reach or talk to the mail server"),
    }
}

/// The job: closes the mail to new entries, sends it, and commits the
/// outcome with the job's next step.
pub async fn run(app: &App, id: String) -> Result<jobs::Ran, StoreError> {
    let name = job_name(&id);
    let mail = {
        let id = id.clone();
        let name = name.clone();
        app.store
            .write(store::Grows::No, move |txn| {
                let Some(mut mail) = store::get::<&str, Mail>(&txn.open(MAILS)?, "mail", id.as_str())? else {
                    jobs::cancel_named(txn, &name)?;
                    return Ok(None);
                };
                if mail.state != State::Queued {
                    jobs::cancel_named(txn, &name)?;
                    return Ok(None);
                }
                if mail.open {
                    mail.open = false;
                    let key = open_key(&mail.kind, &mail.to);
                    let mut open = txn.open(MAIL_OPEN)?;
                    if open.get(key.as_str())?.is_some_and(|v| v.value() == mail.id) {
                        open.remove(key.as_str())?;
                    }
                    drop(open);
                    txn.open(MAILS)?
                        .insert(mail.id.as_str(), store::encode(&mail).as_slice())?;
                }
                Ok(Some(mail))
            })
            .await?
    };
    let Some(mail) = mail else {
        return Ok(jobs::Ran::Ok);
    };

    let settings = app.settings();
    let subject = mail.subject(&settings.general.name);
    let started = std::time::Instant::now();
    let outcome = match &settings.smtp {
        None => Err(SendError {
            category: Category::Configuration,
            message: "no [smtp] is configured, so mails stay queued; add an [smtp] table to the config and reload"
                .into(),
        }),
        Some(smtp) => {
            let body = mail.body(&settings.general.name, &settings.server.public_url);
            send_smtp(smtp, &smtp.from, &mail, subject.clone(), body, app.clock.now()).await
        }
    };
    let outcome = outcome.map(|()| started.elapsed());
    let now = app.clock.now();
    let policy = settings.mail.clone();
    let tz = settings.general.timezone.clone();
    let ran = if outcome.is_ok() {
        jobs::Ran::Ok
    } else {
        jobs::Ran::Failed
    };
    app.store
        .write(store::Grows::No, move |txn| {
            record_attempt(txn, &name, mail, &subject, outcome, now, &policy, &tz)
        })
        .await?;
    Ok(ran)
}

#[allow(clippy::too_many_arguments)]
fn record_attempt(
    txn: &mut Txn,
    job: &str,
    mut mail: Mail,
    subject: &str,
    outcome: Result<std::time::Duration, SendError>,
    now: Timestamp,
    policy: &MailPolicy,
    tz: &jiff::tz::TimeZone,
) -> Result<(), StoreError> {
    mail.attempts += 1;
    let attempt = mail.attempts;
    let line = match outcome {
        Ok(took) => {
            mail.state = State::Sent;
            mail.sent_at = Some(clock::to_ms(now));
            mail.last_error = None;
            jobs::cancel_named(txn, job)?;
            let line = format!(
                "sent {} to {} in {} (attempt {attempt}, {} entries): {subject}",
                mail.id,
                mail.to,
                executions::took(took),
                mail.total
            );
            txn.open(MAILS)?
                .insert(mail.id.as_str(), store::encode(&mail).as_slice())?;
            return executions::log_successes(txn, now, tz, INTERFACE, INTERFACE, [line]);
        }
        Err(e) => {
            tracing::warn!(
                mail = %mail.id,
                attempt,
                category = e.category.as_str(),
                "mail not sent: {}",
                e.message
            );
            mail.last_error = Some(e.message.clone());
            let next = after_failure(clock::from_ms(mail.created_at), attempt, now, policy);
            let (what, level) = match next {
                AfterFailure::RetryAt(at) => {
                    mail.send_after = clock::to_ms(at);
                    jobs::schedule_named(txn, job, at, &SendMail { id: mail.id.clone() })?;
                    (format!("stays queued, next try at {}", clock::fmt(at)), Level::Error)
                }
                AfterFailure::GiveUp => {
                    mail.state = State::Failed;
                    jobs::cancel_named(txn, job)?;
                    (
                        "failed: mail_retention is over, no more tries".to_string(),
                        Level::Error,
                    )
                }
            };
            LogLine {
                at: clock::to_ms(now),
                level,
                category: Some(e.category),
                message: format!("{} to {} (attempt {attempt}) {what}: {}", mail.id, mail.to, e.message),
                detail: Some(format!("subject: {subject}")),
            }
        }
    };
    txn.open(MAILS)?
        .insert(mail.id.as_str(), store::encode(&mail).as_slice())?;
    executions::log_daily(txn, now, tz, INTERFACE, INTERFACE, line)?;
    Ok(())
}

use intake::classify::Classifier;
use intake::domain::{RawSubmission, Reference};
use intake::store::{connect, Channel, JobKind, NewTicket};
use secrecy::SecretString;
#[tokio::main]
async fn main() {
    let url = std::env::args().nth(1).unwrap();
    let batch: usize = std::env::args().nth(2).unwrap().parse().unwrap();
    let store = connect(&SecretString::from(url), 4).await.unwrap();
    store.migrate().await.unwrap();
    let raw = RawSubmission {
        name: Some("Ada Lovelace".into()),
        email: Some("ada@example.com".into()),
        request_type: Some("product".into()),
        subject: Some("Export".into()),
        message: Some("When I click Export SRT nothing happens and no file downloads.".into()),
        account: Some("acct-4411".into()),
        page_url: None,
    };
    let s = raw.validate().unwrap();
    let c = Classifier::builtin().classify(s.request_type, &s.subject, &s.message);
    let t0 = std::time::Instant::now();
    let mut n = 0;
    while t0.elapsed().as_secs() < 4 {
        let tickets: Vec<NewTicket> = (0..batch)
            .map(|_| NewTicket {
                reference: Reference::generate("LV"),
                created_at: chrono::Utc::now(),
                channel: Channel::Api,
                submission: s.clone(),
                classification: c.clone(),
                idempotency_key: None,
                jobs: vec![JobKind::AckEmail, JobKind::GithubIssue],
            })
            .collect();
        let t = std::time::Instant::now();
        store.insert_tickets(&tickets).await.unwrap();
        if n == 0 {
            println!("first batch {:?}", t.elapsed());
        }
        n += batch;
    }
    println!(
        "batch {batch}: {:.0} tickets/s, {:?} per batch",
        n as f64 / t0.elapsed().as_secs_f64(),
        t0.elapsed() / (n / batch) as u32
    );
}

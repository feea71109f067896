//! How long the classifier (rules, features, model, policy) takes per message, over the corpus's
//! messages as customers wrote them: `cargo bench --bench classify` prints p50, p99 and the
//! longest, in microseconds, and the same for the model alone.

use std::time::Instant;

use intake::classify::corpus;
use intake::classify::Classifier;
use intake::domain::{ClosedSet, RequestType};

fn percentiles(mut us: Vec<f64>) -> (f64, f64, f64) {
    us.sort_by(f64::total_cmp);
    let at = |q: f64| us[((us.len() as f64 * q) as usize).min(us.len() - 1)];
    (at(0.5), at(0.99), us[us.len() - 1])
}

fn main() {
    let mut cases = Vec::new();
    for file in ["train.toml", "test.toml"] {
        let path = format!("{}/tests/classify/corpus/{file}", env!("CARGO_MANIFEST_DIR"));
        cases.extend(corpus::load(&std::fs::read_to_string(path).unwrap()).unwrap());
    }
    let classifier = Classifier::builtin();
    let model = classifier.model();
    let rounds = 5;
    let (mut whole, mut model_only) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for c in &cases {
            let picked = RequestType::parse(&c.picked).unwrap_or(RequestType::Product);
            let started = Instant::now();
            std::hint::black_box(classifier.classify(picked, &c.subject, &c.message));
            whole.push(started.elapsed().as_secs_f64() * 1e6);
            let started = Instant::now();
            std::hint::black_box(model.score(&c.subject, &c.message));
            model_only.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    let chars: Vec<usize> = cases.iter().map(|c| c.subject.len() + c.message.len()).collect();
    println!(
        "{} messages x {rounds} rounds (median {} bytes, longest {} bytes)",
        cases.len(),
        {
            let mut c = chars.clone();
            c.sort_unstable();
            c[c.len() / 2]
        },
        chars.iter().max().unwrap()
    );
    for (what, us) in [("rules + model + policy", whole), ("model alone", model_only)] {
        let (p50, p99, max) = percentiles(us);
        println!("{what:<24} p50 {p50:>7.1} us   p99 {p99:>7.1} us   max {max:>7.1} us");
    }
    // A message at the 10,000-character limit.
    let long = "Wenn ich die Projekt-ID in der Adresse ändere, sehe ich fremde Videos. ".repeat(140);
    let started = Instant::now();
    for _ in 0..100 {
        std::hint::black_box(classifier.classify(RequestType::Product, "Fremde Projekte", &long[..10_000]));
    }
    println!(
        "{:<24} {:>7.1} us per message",
        "a 10,000-byte message",
        started.elapsed().as_secs_f64() * 1e6 / 100.0
    );
}

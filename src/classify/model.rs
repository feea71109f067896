//! The learned half of categorisation: a multinomial logistic regression over hashed word unigrams,
//! word bigrams and character 3–5-grams of the subject and message.
//!
//! Why this shape: the rules know the words their author thought of; customers describe effects in
//! their own words, in several languages, with typos. Character n-grams carry a word's stem across
//! inflections, languages and misspellings; a linear model over them is small, explainable by its
//! scores, deterministic to train, and costs a few microseconds a message.
//!
//! The model file (`rules/model.bin`, embedded in the binary, replaceable with
//! `classify.model_file`) is little-endian: the magic `INTKMDL2`, the hash width, the class count,
//! the decision thresholds, the biases and the weights. `intake classify train` writes it from the
//! training split, byte for byte the same for the same corpus.

use unicode_normalization::char::is_combining_mark;

/// The classes the model tells apart, in the file's order.
pub const CLASSES: [&str; 5] = [
    "ok",
    "security",
    "custom_debugging",
    "on_demand_configuration",
    "data_recovery",
];
pub const OK: usize = 0;
pub const SECURITY: usize = 1;
/// Where the unsupported kinds start among [`CLASSES`].
pub const FIRST_UNSUPPORTED: usize = 2;

const N: usize = CLASSES.len();
/// Features are hashed into 2^16 buckets: room for the corpus's n-grams with few collisions, and a
/// model file of 1.3 MiB.
const HASH_BITS: u32 = 16;
const DIM: usize = 1 << HASH_BITS;
const MAGIC: &[u8; 8] = b"INTKMDL2";

/// Tokens looked at, at most: a long message's start says what it is about, and the cost stays bounded.
const MAX_TOKENS: usize = 1200;
/// Character n-grams are taken of words up to this long (longer ones are URLs, hashes, keys).
const MAX_WORD_CHARS: usize = 32;

/// The thresholds of the decision policy (see [`super::Classifier::classify`]), chosen on the
/// training split by cross-validation and stored with the weights.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Thresholds {
    /// From this security probability on, a ticket is a suspected report: filed in the security
    /// route and flagged for triage.
    pub security_suspect: f32,
    /// From this one on, it is a report.
    pub security: f32,
    /// A security rule marked `needs_model` files a report only when the model gives security at
    /// least this (a low bar: the rule and the model agree).
    pub security_rule_confirm: f32,
    /// With a rule for the same unsupported kind, the model must give it at least this.
    pub unsupported_agree: f32,
    /// Without a rule, the model alone must give an unsupported kind at least this.
    pub unsupported_alone: f32,
}

const THRESHOLD_COUNT: usize = 5;

impl Thresholds {
    /// The thresholds in the order the model file stores them.
    fn in_file_order(&self) -> [f32; THRESHOLD_COUNT] {
        [
            self.security_suspect,
            self.security,
            self.security_rule_confirm,
            self.unsupported_agree,
            self.unsupported_alone,
        ]
    }
}

/// Hashed, signed, L2-normalised feature values of one message: `(bucket, value)`, sorted.
pub type Features = Vec<(u32, f32)>;

fn fnv1a(namespace: u8, parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    eat(namespace);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            eat(0x1f);
        }
        for b in p.bytes() {
            eat(b);
        }
    }
    h
}

/// Lowercase, without accents (`é` and a typed `e` are one), digits folded to `0`.
///
/// Each character is decomposed on its own (compatibility decomposition) and its combining marks
/// dropped: the same as NFKD without the marks, whose reordering is all NFKD adds, and much
/// cheaper for the ASCII most messages are made of.
fn normalise(parts: &[&str]) -> String {
    let mut out = String::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    let mut push = |c: char| {
        for l in c.to_lowercase() {
            out.push(if l.is_ascii_digit() { '0' } else { l });
        }
    };
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            push('\n');
        }
        for c in part.chars() {
            if c.is_ascii() {
                push(c);
            } else {
                unicode_normalization::char::decompose_compatible(c, |d| {
                    if !is_combining_mark(d) {
                        push(d);
                    }
                });
            }
        }
    }
    out
}

/// The features of a message.
pub fn features(subject: &str, message: &str) -> Features {
    let text = normalise(&[subject, message]);
    let tokens: Vec<&str> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
        .take(MAX_TOKENS)
        .collect();
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let Scratch { sums, touched } = &mut *scratch;
        if sums.len() != DIM {
            *sums = vec![0.0; DIM];
        }
        touched.clear();
        n_grams(&tokens, |h: u64| {
            let bucket = (h & (DIM as u64 - 1)) as usize;
            let sign = if h >> 63 == 1 { -1.0 } else { 1.0 };
            if sums[bucket] == 0.0 {
                touched.push(bucket as u32);
            }
            sums[bucket] += sign;
        });
        // A bucket whose sum came back to zero and was touched again is listed twice.
        touched.sort_unstable();
        touched.dedup();
        let mut out: Features = Vec::with_capacity(touched.len());
        for &b in touched.iter() {
            let v = std::mem::take(&mut sums[b as usize]);
            if v != 0.0 {
                out.push((b, v));
            }
        }
        let norm = out.iter().map(|(_, v)| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            for (_, v) in &mut out {
                *v /= norm;
            }
        }
        out
    })
}

/// A per-thread dense accumulator, so that summing a message's n-grams needs neither a hash map
/// nor a sort of every hit (this runs for every submission).
#[derive(Default)]
struct Scratch {
    sums: Vec<f32>,
    touched: Vec<u32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Calls `add` with the hash of every word, word bigram and character 3–5-gram of `tokens`.
fn n_grams(tokens: &[&str], mut add: impl FnMut(u64)) {
    let mut padded = String::with_capacity(MAX_WORD_CHARS * 4 + 2);
    let mut bounds: Vec<usize> = Vec::with_capacity(MAX_WORD_CHARS + 3);
    for (i, w) in tokens.iter().enumerate() {
        add(fnv1a(1, &[w]));
        if i > 0 {
            add(fnv1a(2, &[tokens[i - 1], w]));
        }
        let chars = w.chars().count();
        if (2..=MAX_WORD_CHARS).contains(&chars) {
            padded.clear();
            padded.push('^');
            padded.push_str(w);
            padded.push('$');
            bounds.clear();
            bounds.extend(padded.char_indices().map(|(i, _)| i));
            bounds.push(padded.len());
            for n in 3..=5 {
                for start in 0..bounds.len().saturating_sub(n) {
                    add(fnv1a(3, &[&padded[bounds[start]..bounds[start + n]]]));
                }
            }
        }
    }
}

/// A trained model.
#[derive(Clone)]
pub struct Model {
    /// `DIM × N`, bucket-major.
    weights: Vec<f32>,
    bias: [f32; N],
    pub thresholds: Thresholds,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("thresholds", &self.thresholds)
            .finish_non_exhaustive()
    }
}

fn softmax(z: &mut [f32; N]) {
    let max = z.iter().copied().fold(f32::MIN, f32::max);
    let mut sum = 0.0;
    for v in z.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in z.iter_mut() {
        *v /= sum;
    }
}

impl Model {
    /// The probability of each of [`CLASSES`] for these features.
    pub fn probabilities(&self, x: &[(u32, f32)]) -> [f32; N] {
        let mut z = self.bias;
        for (bucket, v) in x {
            let row = &self.weights[*bucket as usize * N..(*bucket as usize + 1) * N];
            for c in 0..N {
                z[c] += v * row[c];
            }
        }
        softmax(&mut z);
        z
    }

    /// The probabilities for a message.
    pub fn score(&self, subject: &str, message: &str) -> [f32; N] {
        self.probabilities(&features(subject, message))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + (N + self.weights.len()) * 4);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&HASH_BITS.to_le_bytes());
        out.extend_from_slice(&(N as u32).to_le_bytes());
        let t = self.thresholds;
        for v in t
            .in_file_order()
            .iter()
            .chain(self.bias.iter())
            .chain(self.weights.iter())
        {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Model, String> {
        let floats_at = MAGIC.len() + 8;
        let expected = floats_at + (THRESHOLD_COUNT + N + DIM * N) * 4;
        if bytes.len() != expected || &bytes[..MAGIC.len()] != MAGIC {
            return Err(format!(
                "not an intake model file of this version (expected {expected} bytes starting with {}); retrain it with `intake classify train`",
                String::from_utf8_lossy(MAGIC)
            ));
        }
        let word = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        if word(MAGIC.len()) != HASH_BITS || word(MAGIC.len() + 4) != N as u32 {
            return Err("the model file was made for other features or classes".to_owned());
        }
        let floats: Vec<f32> = bytes[floats_at..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if floats.iter().any(|f| !f.is_finite()) {
            return Err("the model file holds a value that is not a number".to_owned());
        }
        let mut bias = [0.0; N];
        bias.copy_from_slice(&floats[THRESHOLD_COUNT..THRESHOLD_COUNT + N]);
        Ok(Model {
            thresholds: Thresholds {
                security_suspect: floats[0],
                security: floats[1],
                security_rule_confirm: floats[2],
                unsupported_agree: floats[3],
                unsupported_alone: floats[4],
            },
            bias,
            weights: floats[THRESHOLD_COUNT + N..].to_vec(),
        })
    }
}

/// One labelled message for training.
#[derive(Debug, Clone)]
pub struct Example {
    pub features: Features,
    /// An index into [`CLASSES`].
    pub class: usize,
}

/// A deterministic generator (SplitMix64) for the training order: its output never changes with a
/// crate's version, so the model file is reproducible byte for byte.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// How training runs: fixed, so a corpus gives one model.
pub const EPOCHS: usize = 40;
const LEARNING_RATE: f32 = 0.4;
const L2: f32 = 1e-5;

/// Trains on `examples` (AdaGrad on the softmax cross-entropy, classes weighted by their rarity so
/// that a small class is not drowned), in an order drawn from `seed`, single-threaded.
pub fn train(examples: &[Example], seed: u64) -> Model {
    let mut weights = vec![0.0f32; DIM * N];
    let mut squares = vec![1e-6f32; DIM * N];
    let mut bias = [0.0f32; N];
    let mut bias_squares = [1e-6f32; N];
    let mut per_class = [0usize; N];
    for e in examples {
        per_class[e.class] += 1;
    }
    let class_weight: Vec<f32> = per_class
        .iter()
        .map(|n| examples.len() as f32 / (N as f32 * (*n).max(1) as f32))
        .collect();
    let mut order: Vec<usize> = (0..examples.len()).collect();
    let mut rng = SplitMix(seed);
    for _ in 0..EPOCHS {
        rng.shuffle(&mut order);
        for &i in &order {
            let e = &examples[i];
            let mut z = bias;
            for (bucket, v) in &e.features {
                let row = &weights[*bucket as usize * N..(*bucket as usize + 1) * N];
                for c in 0..N {
                    z[c] += v * row[c];
                }
            }
            softmax(&mut z);
            let mut g = [0.0f32; N];
            for c in 0..N {
                let target = if c == e.class { 1.0 } else { 0.0 };
                g[c] = (z[c] - target) * class_weight[e.class];
            }
            for (bucket, v) in &e.features {
                let at = *bucket as usize * N;
                for c in 0..N {
                    let grad = g[c] * v + L2 * weights[at + c];
                    squares[at + c] += grad * grad;
                    weights[at + c] -= LEARNING_RATE * grad / squares[at + c].sqrt();
                }
            }
            for c in 0..N {
                bias_squares[c] += g[c] * g[c];
                bias[c] -= LEARNING_RATE * g[c] / bias_squares[c].sqrt();
            }
        }
    }
    Model {
        weights,
        bias,
        thresholds: Thresholds {
            security_suspect: 0.5,
            security: 0.5,
            security_rule_confirm: 0.1,
            unsupported_agree: 0.5,
            unsupported_alone: 0.9,
        },
    }
}

/// Out-of-fold probabilities for every example: `folds` models, each trained without one fold and
/// scoring it. What the thresholds are chosen on, so that they are not tuned on text the model saw.
pub fn cross_validated(examples: &[Example], folds: usize, seed: u64) -> Vec<[f32; N]> {
    let mut order: Vec<usize> = (0..examples.len()).collect();
    SplitMix(seed ^ 0x5eed).shuffle(&mut order);
    let mut fold_of = vec![0usize; examples.len()];
    for (k, &i) in order.iter().enumerate() {
        fold_of[i] = k % folds;
    }
    let mut out = vec![[0.0f32; N]; examples.len()];
    for fold in 0..folds {
        let training: Vec<Example> = examples
            .iter()
            .enumerate()
            .filter(|(i, _)| fold_of[*i] != fold)
            .map(|(_, e)| e.clone())
            .collect();
        let model = train(&training, seed.wrapping_add(fold as u64 + 1));
        for (i, e) in examples.iter().enumerate() {
            if fold_of[i] == fold {
                out[i] = model.probabilities(&e.features);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(class: usize, subject: &str, message: &str) -> Example {
        Example {
            features: features(subject, message),
            class,
        }
    }

    #[test]
    fn features_are_normalised_and_ignore_accents_case_and_digits() {
        let a = features("Facture", "Ma facture de mars 2024 est fausse");
        let b = features("FACTURE", "ma fàcture de mars 1999 est fausse");
        assert_eq!(a, b);
        let norm: f32 = a.iter().map(|(_, v)| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-4);
        assert!(features("", "").is_empty());
    }

    #[test]
    fn a_model_learns_a_tiny_corpus_and_round_trips_through_its_file() {
        let examples = vec![
            example(
                SECURITY,
                "other customers data",
                "changing the id in the address shows another customer's videos",
            ),
            example(
                SECURITY,
                "script runs",
                "a subtitle line with a script runs in my colleague's browser",
            ),
            example(OK, "invoice", "please send the invoice for march again"),
            example(OK, "export slow", "the mp4 export takes an hour since monday"),
            example(
                4,
                "restore old project",
                "bring back the project we deleted last year please",
            ),
        ];
        let model = train(&examples, 7);
        let p = model.score(
            "seeing other customers videos",
            "when I change the number in the address I see another customer's project",
        );
        assert!(p[SECURITY] > p[OK], "{p:?}");
        let bytes = model.to_bytes();
        assert!(bytes.len() < 2 * 1024 * 1024);
        let back = Model::from_bytes(&bytes).unwrap();
        assert_eq!(back.to_bytes(), bytes);
        assert_eq!(
            train(&examples, 7).to_bytes(),
            bytes,
            "the same corpus and seed, the same bytes"
        );
        assert!(Model::from_bytes(&bytes[..100]).is_err());
    }
}

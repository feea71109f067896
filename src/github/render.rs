//! The GitHub issue for a ticket: title and body (docs/delivery.md). The customer's text goes into
//! fenced code blocks whose fence is longer than any backtick run in it, so no markdown, HTML,
//! `@mention` or `#123` reference in it takes effect, and it can be copied out exactly.

use crate::domain::{is_invisible, Ticket};

/// GitHub's limits.
pub const TITLE_MAX: usize = 256;
pub const BODY_MAX: usize = 65_536;

/// The hidden marker that lets a retry find an issue it already created.
pub fn marker(reference: &str) -> String {
    format!("<!-- intake-ticket: {reference} -->")
}

/// Whether the marker stands on a line of its own, outside every fenced block: only the service
/// writes it there, since customer text is always inside a fence nothing in it can close.
pub fn has_own_marker(body: &str, marker: &str) -> bool {
    // An open fence: its character and length (CommonMark: closed by a line of at least as many).
    let mut open: Option<(char, usize)> = None;
    for line in body.lines() {
        let trimmed = line.trim_start_matches(' ');
        let indent = line.len() - trimmed.len();
        let fence_char = trimmed.chars().next().filter(|c| *c == '`' || *c == '~');
        let run = fence_char.map_or(0, |f| trimmed.chars().take_while(|c| *c == f).count());
        match open {
            Some((f, len)) => {
                let rest = &trimmed[run.min(trimmed.len())..];
                if indent <= 3 && fence_char == Some(f) && run >= len && rest.trim().is_empty() {
                    open = None;
                }
            }
            None => {
                if indent <= 3 && run >= 3 {
                    let info = &trimmed[run..];
                    // A backtick fence's info string cannot hold a backtick.
                    if fence_char != Some('`') || !info.contains('`') {
                        open = fence_char.map(|f| (f, run));
                        continue;
                    }
                }
                if line.trim() == marker {
                    return true;
                }
            }
        }
    }
    false
}

/// `[<Label>] <subject>`, without invisible characters (controls, bidirectional and other format
/// characters, the same set input cleaning removes), at most 256 characters.
pub fn issue_title(ticket: &Ticket) -> String {
    let raw = format!("[{}] {}", ticket.filed_type.label(), ticket.subject);
    let clean: String = raw
        .chars()
        .map(|c| if c == '\n' || c == '\t' { ' ' } else { c })
        .filter(|c| !is_invisible(*c))
        .collect();
    clean.chars().take(TITLE_MAX).collect()
}

/// A fenced block that nothing inside `text` can close. The text is cleaned first and the fence
/// measured on what is shown, so no character removed here can join two backtick runs.
pub fn fenced(text: &str) -> String {
    let clean: String = text
        .chars()
        .filter(|c| *c == '\n' || *c == '\t' || !is_invisible(*c))
        .collect();
    let longest = clean.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat((longest + 1).max(3));
    format!("{fence}text\n{clean}\n{fence}")
}

/// The issue body. Contact details appear only when `private` (the repository was checked).
pub fn issue_body(ticket: &Ticket, private: bool) -> String {
    let mut b = String::with_capacity(ticket.message.len() + 2048);
    b.push_str(&format!(
        "**Support ticket {}** · type **{}**",
        ticket.reference,
        ticket.filed_type.label()
    ));
    if ticket.picked_type != ticket.filed_type {
        b.push_str(&format!(" (the customer picked {})", ticket.picked_type.label()));
    }
    b.push_str(&format!(
        " · received {} through the {}\n\n",
        ticket.created_at.format("%Y-%m-%d %H:%M UTC"),
        match ticket.channel {
            crate::domain::Channel::Api => "API",
            crate::domain::Channel::Form => "help form",
        }
    ));
    if let Some(u) = ticket.unsupported {
        b.push_str(&format!(
            "**Unsupported request:** {} (answered with the policy).\n\n",
            u.label()
        ));
    }
    if ticket.needs_triage {
        b.push_str("**Needs triage:** the text points at another type than the one picked.\n\n");
    }
    if let Some(band) = crate::classify::band_of(&ticket.signals) {
        b.push_str(&format!("**Why here:** {}\n\n", band.explanation()));
    }
    let rules: Vec<String> = crate::classify::fired_rules(&ticket.signals)
        .map(|s| format!("`{}` → {}", s.rule, s.points_to))
        .collect();
    if rules.is_empty() {
        b.push_str("Rules: none fired.\n\n");
    } else {
        b.push_str(&format!("Rules: {}\n\n", rules.join(", ")));
    }
    let scores = crate::classify::model_scores(&ticket.signals, 2);
    if !scores.is_empty() {
        b.push_str(&format!("Model: {}\n\n", scores.join(", ")));
    }

    if private {
        let mut contact = format!("Name: {}\nEmail: {}", ticket.name, ticket.email);
        if let Some(a) = &ticket.account {
            contact.push_str(&format!("\nAccount: {a}"));
        }
        if let Some(p) = &ticket.page_url {
            contact.push_str(&format!("\nPage: {p}"));
        }
        b.push_str("### Customer\n\n");
        b.push_str(&fenced(&contact));
        b.push_str("\n\n");
    } else {
        b.push_str("Contact details are kept in intake only (this repository is public).\n\n");
    }

    let head = b.clone();
    let tail = format!(
        "\n\n### Support checklist\n\n\
         - [ ] Triage category assigned\n\
         - [ ] Reproducibility verified\n\
         - [ ] Logs and health checked\n\
         - [ ] Fix or workaround applied\n\
         - [ ] Customer answered\n\
         - [ ] Resolution documented\n\n{}\n",
        marker(&ticket.reference)
    );
    let subject = format!("### Subject\n\n{}\n\n", fenced(&ticket.subject));
    let mut message = ticket.message.clone();
    loop {
        let body = format!("{head}{subject}### Message\n\n{}{tail}", fenced(&message));
        if body.chars().count() <= BODY_MAX || message.is_empty() {
            return body;
        }
        // Only a message near the limit with long backtick runs gets here: keep its start.
        let keep = message.chars().count().saturating_sub(1000);
        message = message.chars().take(keep).collect();
        message.push_str("\n[truncated: the full text is in intake]");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Channel;
    use crate::domain::RequestType;
    use proptest::prelude::*;

    pub(crate) fn ticket(subject: &str, message: &str) -> Ticket {
        Ticket {
            id: 1,
            reference: "LV-7K3M9QXD".into(),
            created_at: chrono::Utc::now(),
            channel: Channel::Api,
            name: "@octocat".into(),
            email: "ada@example.com".into(),
            picked_type: RequestType::Product,
            filed_type: RequestType::Security,
            unsupported: None,
            needs_triage: false,
            signals: vec![],
            subject: subject.into(),
            message: message.into(),
            account: None,
            page_url: None,
            ack_message_id: None,
            github_issue: None,
        }
    }

    /// The content of each fenced block, read as a CommonMark reader would: a block opened by a
    /// run of N >= 3 backticks ends at the first line of at least N backticks alone.
    fn fenced_blocks(body: &str) -> (Vec<String>, String) {
        let mut blocks = Vec::new();
        let mut outside = String::new();
        let mut lines = body.split('\n');
        while let Some(line) = lines.next() {
            let ticks = line.chars().take_while(|c| *c == '`').count();
            if ticks >= 3 {
                let mut content = Vec::new();
                for inner in lines.by_ref() {
                    let t = inner.trim_end();
                    if t.len() >= ticks && t.chars().all(|c| c == '`') {
                        break;
                    }
                    content.push(inner);
                }
                blocks.push(content.join("\n"));
            } else {
                outside.push_str(line);
                outside.push('\n');
            }
        }
        (blocks, outside)
    }

    #[test]
    fn the_body_carries_reference_signals_checklist_and_marker() {
        let b = issue_body(&ticket("Login broken", "Please look."), false);
        assert!(b.contains("LV-7K3M9QXD"));
        assert!(b.contains("the customer picked Product"));
        assert!(b.contains("- [ ] Customer answered"));
        assert!(b.ends_with("<!-- intake-ticket: LV-7K3M9QXD -->\n"));
        assert!(
            !b.contains("ada@example.com") && !b.contains("octocat"),
            "no contact details in public"
        );
        let private = issue_body(&ticket("Login broken", "Please look."), true);
        assert!(private.contains("Email: ada@example.com"));
        let (blocks, outside) = fenced_blocks(&private);
        assert!(blocks[0].contains("@octocat"), "the name is inside a fence");
        assert!(!outside.contains("@octocat"));
    }

    #[test]
    fn titles_lose_controls_and_bidi_and_stop_at_256() {
        let t = issue_title(&ticket("a\u{202E}b\u{2066}c\u{7}d", "m"));
        assert_eq!(t, "[Security] abcd");
        let long = issue_title(&ticket(&"x".repeat(400), "m"));
        assert_eq!(long.chars().count(), TITLE_MAX);
    }

    #[test]
    fn a_fence_is_longer_than_any_backtick_run() {
        let f = fenced("a ```` b\n`````\nc");
        assert!(f.starts_with("``````text\n"));
    }

    #[test]
    fn an_invisible_character_cannot_join_backtick_runs_to_close_the_fence() {
        // U+061C between two runs of three: stripped, the runs make six.
        for sep in ['\u{61C}', '\u{AD}', '\u{180E}', '\u{FE0F}', '\u{E0041}', '\u{200B}'] {
            let text = format!("```{sep}```\n@octocat <!-- intake-ticket: LV-FORGED00 -->");
            let f = fenced(&text);
            let fence_len = f.chars().take_while(|c| *c == '`').count();
            assert!(fence_len >= 7, "U+{:04X}: {f}", sep as u32);
            let (blocks, outside) = fenced_blocks(&format!("{f}\n"));
            assert_eq!(blocks.len(), 1);
            assert!(!outside.contains("octocat"));
        }
    }

    #[test]
    fn the_marker_counts_only_on_its_own_line_outside_fences() {
        let m = marker("LV-7K3M9QXD");
        let real = issue_body(&ticket("s", "a message"), false);
        assert!(has_own_marker(&real, &m));
        // A customer who quotes the marker in a message of another ticket does not make it theirs.
        let quoted = issue_body(&ticket("s", &format!("see\n{m}\nplease")), false).replace(&format!("\n\n{m}\n"), "\n");
        assert!(quoted.contains(&m));
        assert!(!has_own_marker(&quoted, &m));
        assert!(!has_own_marker(&format!("text {m} more"), &m));
        assert!(
            !has_own_marker(&format!("~~~~\n{m}\n~~~\n"), &m),
            "a shorter line does not close"
        );
        assert!(has_own_marker(&format!("~~~\ncode\n~~~\n{m}\n"), &m));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn customer_text_is_inert_and_recoverable(
            subject in "[^\u{0}-\u{1f}\u{7f}-\u{9f}]{1,40}",
            message in "(`{1,7}|@[a-z]{1,8}|#[0-9]{1,4}|[a-z]{1,5}/[a-z]{1,5}#[0-9]|<script>|<img src=x>|<!-- intake-ticket: LV-FORGED00 -->|\\*\\*|\n|~~~|[\u{61c}\u{ad}\u{180e}\u{200b}-\u{200f}\u{202a}-\u{202e}\u{2060}-\u{2069}\u{fe00}-\u{fe0f}\u{feff}\u{e0000}-\u{e007f}\u{e0100}]|[ a-zA-Z0-9])+",
        ) {
            // What input cleaning stores; the renderer must hold on stored text and on raw text alike.
            let subject = crate::domain::clean_single_line(&subject);
            prop_assume!(!subject.is_empty());
            let t = ticket(&subject, &message);
            let body = issue_body(&t, false);
            let (blocks, outside) = fenced_blocks(&body);
            // Subject and message come back from their blocks, less the invisible characters.
            let shown: String = message.chars().filter(|c| *c == '\n' || *c == '\t' || !is_invisible(*c)).collect();
            prop_assert_eq!(blocks.len(), 2);
            prop_assert_eq!(&blocks[0], &subject);
            prop_assert_eq!(&blocks[1], &shown);
            prop_assert!(has_own_marker(&body, &marker("LV-7K3M9QXD")));
            prop_assert!(!has_own_marker(&body, "<!-- intake-ticket: LV-FORGED00 -->"));
            prop_assert!(!issue_title(&t).chars().any(is_invisible));
            // Outside the fences only our own text: no mention, reference or HTML from the customer.
            prop_assert!(!outside.contains("LV-FORGED00"));
            let ours = outside.replace("<!-- intake-ticket: LV-7K3M9QXD -->", "");
            prop_assert!(!ours.contains('@'));
            prop_assert!(!regex::Regex::new("#[0-9A-Za-z]").unwrap().is_match(&ours));
            prop_assert!(!ours.contains('<'));
            prop_assert!(body.chars().count() <= BODY_MAX);
        }
    }
}

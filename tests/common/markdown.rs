//! A Markdown text as a CommonMark parser with GitHub's tables reads it: what is prose,
//! what is code, the headings, the tables' cells, and any HTML or link.

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

/// What a Markdown text holds, as a CommonMark parser with GitHub's tables reads it.
#[derive(Debug, Default)]
pub struct Read {
    /// Text outside code, headings included.
    pub prose: String,
    /// Inline code spans.
    pub code: Vec<String>,
    /// Fenced code blocks.
    pub blocks: Vec<String>,
    pub headings: Vec<(HeadingLevel, String)>,
    pub html: Vec<String>,
    pub links: Vec<String>,
    /// Each table: its rows (the header first), each cell's text (code included).
    pub tables: Vec<Vec<Vec<String>>>,
}

pub fn read(markdown: &str) -> Read {
    let mut r = Read::default();
    let mut block: Option<String> = None;
    let mut heading: Option<(HeadingLevel, String)> = None;
    let mut cell: Option<String> = None;
    let opts = Options::ENABLE_TABLES | Options::ENABLE_TASKLISTS;
    for ev in Parser::new_ext(markdown, opts) {
        match ev {
            Event::Start(Tag::Heading { level, .. }) => heading = Some((level, String::new())),
            Event::End(TagEnd::Heading(_)) => r.headings.extend(heading.take()),
            Event::Start(Tag::CodeBlock(_)) => block = Some(String::new()),
            Event::End(TagEnd::CodeBlock) => r.blocks.extend(block.take()),
            Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) => {
                r.links.push(dest_url.to_string())
            }
            Event::Html(h) | Event::InlineHtml(h) => r.html.push(h.to_string()),
            Event::Start(Tag::Table(_)) => r.tables.push(Vec::new()),
            Event::Start(Tag::TableHead | Tag::TableRow) => {
                r.tables.last_mut().unwrap().push(Vec::new())
            }
            Event::Start(Tag::TableCell) => cell = Some(String::new()),
            Event::End(TagEnd::TableCell) => {
                let row = r.tables.last_mut().unwrap().last_mut().unwrap();
                row.push(cell.take().unwrap());
            }
            Event::Code(c) => {
                for x in [heading.as_mut().map(|(_, h)| h), cell.as_mut()]
                    .into_iter()
                    .flatten()
                {
                    x.push_str(&c);
                }
                r.code.push(c.to_string());
            }
            Event::Text(t) => match block.as_mut() {
                Some(b) => b.push_str(&t),
                None => {
                    for x in [heading.as_mut().map(|(_, h)| h), cell.as_mut()]
                        .into_iter()
                        .flatten()
                    {
                        x.push_str(&t);
                    }
                    r.prose.push_str(&t);
                    r.prose.push('\n');
                }
            },
            _ => {}
        }
    }
    r
}

//! Full-text search over an index's text columns: a tantivy index in memory, BM25-scored.
//!
//! Each row is one document: its internal id and the text of its text columns. The tantivy index is derived state,
//! rebuilt from the rows when an index is loaded, so it needs no files of its own. Writes are buffered and committed
//! when the next full-text query comes, so a bulk upsert costs one commit.

use crate::VectorError;
use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::{Field, INDEXED, STORED, Schema, TEXT, Value};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

/// tantivy's smallest accepted indexing budget; one thread per index is plenty for these sizes.
const WRITER_BUDGET_BYTES: usize = 15_000_000;

pub(crate) struct TextIndex {
    index: Index,
    writer: IndexWriter,
    reader: IndexReader,
    id: Field,
    body: Field,
    /// Writes not yet committed and visible to searches.
    dirty: bool,
}

fn engine(error: tantivy::TantivyError) -> VectorError {
    VectorError::FullText(error.to_string())
}

impl TextIndex {
    pub(crate) fn new() -> Result<TextIndex, VectorError> {
        let mut schema = Schema::builder();
        let id = schema.add_u64_field("id", INDEXED | STORED);
        let body = schema.add_text_field("body", TEXT);
        let index = Index::create_in_ram(schema.build());
        let writer = index
            .writer_with_num_threads(1, WRITER_BUDGET_BYTES)
            .map_err(engine)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(engine)?;
        Ok(TextIndex {
            index,
            writer,
            reader,
            id,
            body,
            dirty: false,
        })
    }

    pub(crate) fn add(&mut self, id: u64, text: &str) -> Result<(), VectorError> {
        let mut document = TantivyDocument::default();
        document.add_u64(self.id, id);
        document.add_text(self.body, text);
        self.writer.add_document(document).map_err(engine)?;
        self.dirty = true;
        Ok(())
    }

    pub(crate) fn remove(&mut self, id: u64) {
        self.writer.delete_term(Term::from_field_u64(self.id, id));
        self.dirty = true;
    }

    /// Ids of the rows matching `query` with their BM25 scores, best first, keeping only those `keep` accepts, at
    /// most `limit`. The query is parsed leniently (tantivy's query syntax; what does not parse is read as words).
    pub(crate) fn search(
        &mut self,
        query: &str,
        limit: usize,
        keep: &dyn Fn(u64) -> bool,
    ) -> Result<Vec<(u64, f32)>, VectorError> {
        if self.dirty {
            self.writer.commit().map_err(engine)?;
            self.reader.reload().map_err(engine)?;
            self.dirty = false;
        }
        let searcher = self.reader.searcher();
        let total = usize::try_from(searcher.num_docs()).unwrap_or(usize::MAX);
        if total == 0 || limit == 0 {
            return Ok(Vec::new());
        }
        let (parsed, _) =
            QueryParser::for_index(&self.index, vec![self.body]).parse_query_lenient(query);
        // Filters are evaluated on rows, not inside tantivy, so every match is ranked; matches are bounded by the
        // index size, which is what a restrictive filter needs to still fill `limit`.
        let matches = searcher
            .search(&parsed, &TopDocs::with_limit(total).order_by_score())
            .map_err(engine)?;
        let mut hits = Vec::with_capacity(limit.min(matches.len()));
        for (score, address) in matches {
            let document: TantivyDocument = searcher.doc(address).map_err(engine)?;
            let Some(id) = document.get_first(self.id).and_then(|value| value.as_u64()) else {
                continue;
            };
            if keep(id) {
                hits.push((id, score));
                if hits.len() == limit {
                    break;
                }
            }
        }
        Ok(hits)
    }
}

//! `format=parquet`: the CSV's columns as a typed Parquet file, streamed.
//!
//! Why Parquet at all: a season's detections are millions of rows that
//! people load into pandas, R (arrow) or DuckDB, where a CSV is re-parsed
//! and re-typed on every read. Here every column carries its type (times are
//! UTC timestamps, scores 32-bit floats, unknown values nulls rather than
//! empty strings) and the file is compressed (Snappy).
//!
//! A Parquet file ends with a footer describing its row groups, so it cannot
//! be written row by row like a CSV; it is written one row group at a time
//! instead. Rows are gathered column by column up to [`ROW_GROUP_ROWS`], the
//! group is encoded into an in-memory buffer and that buffer is handed to
//! the response as soon as the group is closed, so memory stays bounded by
//! one row group whatever the size of the job. The footer follows the last
//! group.

use std::sync::Arc;

use bytes::Bytes;
use parquet::basic::Compression;
use parquet::data_type::{
    ByteArray, ByteArrayType, DataType, DoubleType, FloatType, Int32Type, Int64Type,
};
use parquet::errors::ParquetError;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::{SerializedFileWriter, SerializedRowGroupWriter};
use parquet::schema::parser::parse_message_type;
use uuid::Uuid;

use super::Row;

/// The registered media type of Parquet files.
pub const MEDIA_TYPE: &str = "application/vnd.apache.parquet";

/// Rows per row group: about 10 MB of buffered columns at the widest rows,
/// and large enough for readers to scan efficiently.
pub const ROW_GROUP_ROWS: usize = 50_000;

/// The file's schema, in the order the columns are written. The names and
/// meanings are the CSV's (see [`super::CSV_HEADER`]), plus the scientific
/// name from the species table.
pub const SCHEMA: &str = "message detection {
    REQUIRED BYTE_ARRAY source_path (STRING);
    REQUIRED BYTE_ARRAY file_sha256 (STRING);
    REQUIRED INT32 window_index;
    REQUIRED DOUBLE start_s;
    REQUIRED DOUBLE end_s;
    REQUIRED BYTE_ARRAY species (STRING);
    OPTIONAL BYTE_ARRAY scientific_name (STRING);
    REQUIRED FLOAT confidence;
    REQUIRED BYTE_ARRAY model_version (STRING);
    REQUIRED FLOAT threshold;
    OPTIONAL INT64 start_at (TIMESTAMP(MICROS, true));
    OPTIONAL INT64 end_at (TIMESTAMP(MICROS, true));
    OPTIONAL INT32 utc_offset_minutes;
}";

/// Values of one nullable column and their definition levels (1: present).
#[derive(Default)]
struct Nullable<T> {
    values: Vec<T>,
    defined: Vec<i16>,
}

impl<T> Nullable<T> {
    fn push(&mut self, value: Option<T>) {
        match value {
            Some(v) => {
                self.values.push(v);
                self.defined.push(1);
            }
            None => self.defined.push(0),
        }
    }
}

/// The rows of the row group being gathered, column by column.
#[derive(Default)]
struct Columns {
    source_path: Vec<ByteArray>,
    file_sha256: Vec<ByteArray>,
    window_index: Vec<i32>,
    start_s: Vec<f64>,
    end_s: Vec<f64>,
    species: Vec<ByteArray>,
    scientific_name: Nullable<ByteArray>,
    confidence: Vec<f32>,
    model_version: Vec<ByteArray>,
    threshold: Vec<f32>,
    start_at: Nullable<i64>,
    end_at: Nullable<i64>,
    utc_offset_minutes: Nullable<i32>,
}

fn text(s: &str) -> ByteArray {
    ByteArray::from(s.as_bytes().to_vec())
}

/// A job's detections becoming a Parquet file, one row group at a time.
pub struct ParquetExport {
    writer: SerializedFileWriter<Vec<u8>>,
    columns: Columns,
    rows: usize,
}

impl ParquetExport {
    /// Starts the file; `job` is recorded in its key-value metadata.
    pub fn new(job: Uuid) -> Result<Self, ParquetError> {
        let schema = Arc::new(parse_message_type(SCHEMA)?);
        let properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_created_by(format!("birdsong-api {}", env!("CARGO_PKG_VERSION")))
            .set_key_value_metadata(Some(vec![KeyValue::new(
                "birdsong.job_id".to_string(),
                job.to_string(),
            )]))
            .build();
        Ok(Self {
            writer: SerializedFileWriter::new(Vec::new(), schema, Arc::new(properties))?,
            columns: Columns::default(),
            rows: 0,
        })
    }

    /// Adds a row; returns the bytes of a finished row group when this row
    /// filled one.
    pub fn push(&mut self, row: &Row) -> Result<Option<Bytes>, ParquetError> {
        let c = &mut self.columns;
        c.source_path.push(text(&row.source_path));
        c.file_sha256.push(text(&row.file_sha256));
        c.window_index.push(row.window_index);
        c.start_s.push(row.start_s);
        c.end_s.push(row.end_s);
        c.species.push(text(&row.species));
        c.scientific_name
            .push(row.scientific_name.as_deref().map(text));
        c.confidence.push(row.confidence);
        c.model_version.push(text(&row.model_version));
        c.threshold.push(row.threshold);
        c.start_at.push(row.start_at.map(|t| t.timestamp_micros()));
        c.end_at.push(row.end_at.map(|t| t.timestamp_micros()));
        c.utc_offset_minutes.push(row.utc_offset_minutes);
        self.rows += 1;
        if self.rows >= ROW_GROUP_ROWS {
            self.write_group()?;
            return Ok(Some(self.take()));
        }
        Ok(None)
    }

    /// Writes what is left and the footer; returns the rest of the file.
    pub fn finish(mut self) -> Result<Bytes, ParquetError> {
        if self.rows > 0 {
            self.write_group()?;
        }
        Ok(Bytes::from(self.writer.into_inner()?))
    }

    /// The bytes written so far and not yet handed out. Taking them from the
    /// underlying buffer leaves the writer's byte count (which the footer's
    /// offsets come from) untouched.
    fn take(&mut self) -> Bytes {
        Bytes::from(std::mem::take(self.writer.inner_mut()))
    }

    fn write_group(&mut self) -> Result<(), ParquetError> {
        let c = std::mem::take(&mut self.columns);
        self.rows = 0;
        let mut group = self.writer.next_row_group()?;
        column::<ByteArrayType>(&mut group, &c.source_path, None)?;
        column::<ByteArrayType>(&mut group, &c.file_sha256, None)?;
        column::<Int32Type>(&mut group, &c.window_index, None)?;
        column::<DoubleType>(&mut group, &c.start_s, None)?;
        column::<DoubleType>(&mut group, &c.end_s, None)?;
        column::<ByteArrayType>(&mut group, &c.species, None)?;
        nullable::<ByteArrayType>(&mut group, &c.scientific_name)?;
        column::<FloatType>(&mut group, &c.confidence, None)?;
        column::<ByteArrayType>(&mut group, &c.model_version, None)?;
        column::<FloatType>(&mut group, &c.threshold, None)?;
        nullable::<Int64Type>(&mut group, &c.start_at)?;
        nullable::<Int64Type>(&mut group, &c.end_at)?;
        nullable::<Int32Type>(&mut group, &c.utc_offset_minutes)?;
        if group.next_column()?.is_some() {
            return Err(ParquetError::General(
                "the schema has more columns than the export writes".into(),
            ));
        }
        group.close()?;
        self.writer.flush()?;
        Ok(())
    }
}

/// Writes the next column of the group.
fn column<T: DataType>(
    group: &mut SerializedRowGroupWriter<'_, Vec<u8>>,
    values: &[T::T],
    defined: Option<&[i16]>,
) -> Result<(), ParquetError> {
    let mut writer = group.next_column()?.ok_or_else(|| {
        ParquetError::General("the export writes more columns than the schema has".into())
    })?;
    writer.typed::<T>().write_batch(values, defined, None)?;
    writer.close()
}

fn nullable<T: DataType>(
    group: &mut SerializedRowGroupWriter<'_, Vec<u8>>,
    column_values: &Nullable<T::T>,
) -> Result<(), ParquetError> {
    column::<T>(group, &column_values.values, Some(&column_values.defined))
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;

    /// Detection `i`: of a recording whose start is known (times, offset and
    /// scientific name set) or not (all three null).
    fn row(i: i32, known: bool) -> Row {
        let mut row =
            super::super::tests::row(known.then_some("2024-05-01T04:30:03Z"), known.then_some(60));
        let shift = chrono::TimeDelta::seconds(i64::from(i));
        row.start_at = row.start_at.map(|t| t + shift);
        row.end_at = row.end_at.map(|t| t + shift);
        row.source_path = format!("site 1/rec-{i}.wav");
        row.window_index = i;
        row.start_s = f64::from(i);
        row.end_s = f64::from(i) + 3.0;
        if !known {
            row.scientific_name = None;
        }
        row
    }

    /// Several row groups, handed out as they fill, make one file whose rows,
    /// types and nulls read back as written.
    #[test]
    fn streamed_row_groups_read_back() {
        let job = Uuid::new_v4();
        let mut export = ParquetExport::new(job).unwrap();
        let total = ROW_GROUP_ROWS * 2 + 7;
        let mut file = Vec::new();
        let mut handed_out = 0;
        for i in 0..total {
            let i = i32::try_from(i).unwrap();
            if let Some(chunk) = export.push(&row(i, i % 2 == 0)).unwrap() {
                handed_out += 1;
                file.extend_from_slice(&chunk);
            }
        }
        assert_eq!(handed_out, 2, "a chunk per full row group");
        file.extend_from_slice(&export.finish().unwrap());

        let reader = SerializedFileReader::new(Bytes::from(file)).unwrap();
        let meta = reader.metadata();
        assert_eq!(meta.num_row_groups(), 3);
        assert_eq!(
            meta.file_metadata().num_rows(),
            i64::try_from(total).unwrap()
        );
        let kv = meta.file_metadata().key_value_metadata().unwrap();
        assert!(kv.iter().any(|k| k.key == "birdsong.job_id" && k.value.as_deref() == Some(&job.to_string())));

        let rows: Vec<_> = reader
            .get_row_iter(None)
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(rows.len(), total);
        let fields = |i: usize| -> Vec<(String, Field)> {
            rows[i]
                .get_column_iter()
                .map(|(n, f)| (n.clone(), f.clone()))
                .collect()
        };
        let known = fields(ROW_GROUP_ROWS + 2);
        let names: Vec<&str> = known.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "source_path",
                "file_sha256",
                "window_index",
                "start_s",
                "end_s",
                "species",
                "scientific_name",
                "confidence",
                "model_version",
                "threshold",
                "start_at",
                "end_at",
                "utc_offset_minutes",
            ]
        );
        let get = |fs: &[(String, Field)], name: &str| {
            fs.iter()
                .find(|(n, _)| n == name)
                .map(|(_, f)| f.clone())
                .unwrap()
        };
        let window = i32::try_from(ROW_GROUP_ROWS + 2).unwrap();
        assert_eq!(get(&known, "window_index"), Field::Int(window));
        assert_eq!(get(&known, "confidence"), Field::Float(0.91));
        assert_eq!(
            get(&known, "source_path"),
            Field::Str(format!("site 1/rec-{window}.wav"))
        );
        let expected = row(window, true).start_at.unwrap().timestamp_micros();
        assert_eq!(get(&known, "start_at"), Field::TimestampMicros(expected));
        assert_eq!(get(&known, "utc_offset_minutes"), Field::Int(60));

        let unknown = fields(ROW_GROUP_ROWS + 3);
        for name in [
            "scientific_name",
            "start_at",
            "end_at",
            "utc_offset_minutes",
        ] {
            assert_eq!(get(&unknown, name), Field::Null, "{name}");
        }
    }

    /// A job without detections is still a valid, empty file with the schema.
    #[test]
    fn no_rows_is_an_empty_file() {
        let export = ParquetExport::new(Uuid::new_v4()).unwrap();
        let reader = SerializedFileReader::new(export.finish().unwrap()).unwrap();
        assert_eq!(reader.metadata().file_metadata().num_rows(), 0);
        assert_eq!(
            reader
                .metadata()
                .file_metadata()
                .schema_descr()
                .num_columns(),
            13
        );
    }
}

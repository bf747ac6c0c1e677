//! Field values beyond what JSON Schema checks: canonical forms (datetimes in UTC with
//! milliseconds, so that they sort as text) and conversions between field types.

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use super::definition::{FieldDefinition, FieldType};

/// Rewrites a valid value into its canonical stored form.
pub fn normalize(field: &FieldDefinition, value: &mut Value) -> Result<(), String> {
    match (field.value_type(), &mut *value) {
        (FieldType::Datetime, Value::String(text)) => *text = canonical_datetime(text)?,
        // Addresses compare without case (uniqueness, lookups): stored in lower case.
        (FieldType::Email, Value::String(text)) if text.chars().any(char::is_uppercase) => {
            *text = text.to_lowercase()
        }
        (FieldType::Phone, Value::String(text)) => {
            *text = canonical_phone(text, field.region.as_deref())
        }
        // JSON Schema counts `1.0` as an integer; store it as `1` so that SQL casts to integers
        // never meet a fraction.
        (FieldType::Integer, Value::Number(number)) if !number.is_i64() => {
            let float = number.as_f64().unwrap_or(f64::NAN);
            if float.fract() != 0.0 || float.abs() > 9.0e15 {
                return Err(format!("{number} is not an integer"));
            }
            *value = Value::from(float as i64);
        }
        _ => {}
    }
    Ok(())
}

/// A phone number in E.164 (`+33144000000`, an extension kept as ` x12`) when it parses: with
/// a country code (`+33 1 44 00 00 00`, `0033 1 44…`) or, given the field's region, in that
/// country's national format (`01 44 00 00 00` in `FR`). Anything else is kept as written.
pub fn canonical_phone(text: &str, region: Option<&str>) -> String {
    let trimmed = text.trim();
    let international = trimmed
        .strip_prefix("00")
        .map(|rest| format!("+{rest}"))
        .unwrap_or_else(|| trimmed.to_owned());
    if region.is_none()
        && let Some(e164) = nanp_e164(&international)
    {
        return e164;
    }
    parsed_phone(trimmed, &international, region)
}

/// The E.164 form of `+1` and ten digits whose first is 2–9 (an area code), spelled
/// `+1 AAA EEE LLLL` with a space, dot or hyphen after `+1`, then at most one after each of the
/// next two groups and the area code optionally in parentheses, or as bare digits (`+1 (415) 555-0199`, `+1-415-555-0199`, `+14155550199`); `None`
/// for anything else, which the parser handles.
///
/// `phonenumber` answers the same for these (a test compares the two over every area code, and
/// property tests over random spellings), but finds it by trying the number against the
/// patterns of each of the 25 regions that share calling code 1, one after the other, each
/// pattern looked up in a global regex cache behind a mutex: for a number valid in none of them
/// (the `555` numbers of test and demo data) that was 15% of a bulk import's CPU. Whichever
/// region it picks, a ten-digit number after `+1` keeps its digits: no region's national prefix
/// (`1`) or prefix rules match a number that starts with 2–9 and has ten digits.
fn nanp_e164(international: &str) -> Option<String> {
    fn separator(text: &[u8], at: &mut usize) -> bool {
        let found = matches!(text.get(*at), Some(b' ' | b'-' | b'.'));
        *at += usize::from(found);
        found
    }
    fn digits<'t>(text: &'t str, at: &mut usize, count: usize) -> Option<&'t str> {
        let group = text.get(*at..*at + count)?;
        group.bytes().all(|b| b.is_ascii_digit()).then(|| {
            *at += count;
            group
        })
    }
    let rest = international.strip_prefix("+1")?;
    let bytes = rest.as_bytes();
    let mut at = 0;
    let after_code = separator(bytes, &mut at);
    let parenthesized = bytes.get(at) == Some(&b'(');
    let area = if parenthesized {
        at += 1;
        let area = digits(rest, &mut at, 3)?;
        (bytes.get(at) == Some(&b')')).then_some(())?;
        at += 1;
        area
    } else {
        digits(rest, &mut at, 3)?
    };
    let after_area = separator(bytes, &mut at);
    let exchange = digits(rest, &mut at, 3)?;
    let after_exchange = separator(bytes, &mut at);
    let line = digits(rest, &mut at, 4)?;
    // Without a separator after `+1`, the parser keeps a spelling with separators further on as
    // written (`+1200-000-0000`): there, only the bare digits.
    let consistent = after_code || !(parenthesized || after_area || after_exchange);
    (at == rest.len() && consistent && matches!(area.as_bytes()[0], b'2'..=b'9'))
        .then(|| format!("+1{area}{exchange}{line}"))
}

/// [`canonical_phone`] by `phonenumber`'s parser.
fn parsed_phone(trimmed: &str, international: &str, region: Option<&str>) -> String {
    use phonenumber::Mode;
    let country = region.and_then(|region| region.parse::<phonenumber::country::Id>().ok());
    if !international.starts_with('+') && country.is_none() {
        return trimmed.to_owned();
    }
    match phonenumber::parse(country, international) {
        Ok(number) => {
            let mut e164 = number.format().mode(Mode::E164).to_string();
            if let Some(extension) = number.extension() {
                e164.push_str(&format!(" x{extension}"));
            }
            e164
        }
        Err(_) => trimmed.to_owned(),
    }
}

/// `2026-01-02T03:04:05.678Z`: UTC with exactly three fractional digits.
pub fn canonical_datetime(text: &str) -> Result<String, String> {
    let parsed = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|_| format!("`{text}` is not an RFC 3339 datetime"))?;
    if parsed.nanosecond() % 1_000_000 != 0 {
        return Err(format!("`{text}` is more precise than milliseconds"));
    }
    datetime_text(parsed).map_err(|error| format!("`{text}` cannot be stored: {error}"))
}

/// A moment in the form datetime fields are stored in: UTC, to the millisecond (finer digits
/// are cut, not rounded).
pub fn datetime_text(moment: OffsetDateTime) -> Result<String, time::error::Format> {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    moment.to_offset(time::UtcOffset::UTC).format(&format)
}

/// Converts a stored value to a field's new type, or `None` when it has no faithful equivalent.
/// The result is validated against the new field's schema afterwards.
pub fn convert(value: &Value, to: &FieldDefinition) -> Option<Value> {
    match to.value_type() {
        FieldType::Text
        | FieldType::LongText
        | FieldType::Email
        | FieldType::Phone
        | FieldType::Url
        | FieldType::Reference => match value {
            Value::String(text) => Some(json!(text)),
            Value::Number(number) => Some(json!(number.to_string())),
            Value::Bool(boolean) => Some(json!(boolean.to_string())),
            _ => None,
        },
        FieldType::Integer => match value {
            Value::Number(number) => number.as_i64().or_else(|| {
                number
                    .as_f64()
                    .filter(|float| float.fract() == 0.0 && float.abs() < 9.0e15)
                    .map(|float| float as i64)
            }),
            Value::String(text) => text.trim().parse::<i64>().ok(),
            _ => None,
        }
        .map(Value::from),
        FieldType::Decimal => match value {
            Value::Number(_) => Some(value.clone()),
            Value::String(text) => text
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|float| float.is_finite())
                .map(Value::from),
            Value::Object(object) => object.get("amount").cloned(),
            _ => None,
        },
        FieldType::Boolean => match value {
            Value::Bool(_) => Some(value.clone()),
            Value::Number(number) => match number.as_i64() {
                Some(0) => Some(json!(false)),
                Some(1) => Some(json!(true)),
                _ => None,
            },
            Value::String(text) => match text.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Some(json!(true)),
                "false" | "no" | "0" => Some(json!(false)),
                _ => None,
            },
            _ => None,
        },
        FieldType::Date => value.as_str().map(|text| json!(text)),
        FieldType::Datetime => value.as_str().map(|text| {
            if text.len() == 10 {
                json!(format!("{text}T00:00:00.000Z"))
            } else {
                json!(text)
            }
        }),
        FieldType::Picklist if to.multiple => match value {
            Value::String(text) => Some(json!([text])),
            Value::Array(_) => Some(value.clone()),
            _ => None,
        },
        FieldType::Picklist => match value {
            Value::String(_) => Some(value.clone()),
            Value::Array(items) if items.len() == 1 => Some(items[0].clone()),
            _ => None,
        },
        FieldType::Currency => value.is_object().then(|| value.clone()),
        FieldType::Json => Some(value.clone()),
        FieldType::AutoNumber | FieldType::Computed => None,
    }
}

#[cfg(test)]
mod phone_tests {
    use super::canonical_phone;

    #[test]
    fn phones_are_stored_in_e164_when_they_parse() {
        assert_eq!(canonical_phone("+33 1 44 00 00 00", None), "+33144000000");
        assert_eq!(
            canonical_phone("0033 (1) 44-00-00-00", None),
            "+33144000000"
        );
        assert_eq!(
            canonical_phone("01 44 00 00 00", Some("FR")),
            "+33144000000"
        );
        assert_eq!(
            canonical_phone("010 6552 9988", Some("CN")),
            "+861065529988"
        );
        assert_eq!(
            canonical_phone("(212) 555-0100 x12", Some("US")),
            "+12125550100 x12"
        );
        // No country code and no region: kept as written.
        assert_eq!(canonical_phone(" 01 44 00 00 00 ", None), "01 44 00 00 00");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integral_numbers_are_stored_as_integers() {
        let field: FieldDefinition =
            serde_json::from_value(json!({"name": "n", "type": "integer"})).unwrap();
        let mut value = json!(3.0);
        normalize(&field, &mut value).unwrap();
        assert!(value.is_i64());
        assert_eq!(value, json!(3));
    }

    #[test]
    fn datetimes_are_stored_in_utc_with_milliseconds() {
        assert_eq!(
            canonical_datetime("2026-01-02T03:04:05Z").unwrap(),
            "2026-01-02T03:04:05.000Z"
        );
        assert_eq!(
            canonical_datetime("2026-01-02T03:04:05.5+02:00").unwrap(),
            "2026-01-02T01:04:05.500Z"
        );
        assert!(canonical_datetime("2026-01-02T03:04:05.0001Z").is_err());
        assert!(canonical_datetime("yesterday").is_err());
    }

    /// What `phonenumber` makes of a number, without the `+1` shortcut.
    fn parsed(text: &str) -> String {
        parsed_phone(text, text, None)
    }

    #[test]
    fn nanp_numbers_get_the_same_e164_as_from_the_phone_number_parser() {
        let spellings = [
            |a: &str, b: &str, c: &str| format!("+1{a}{b}{c}"),
            |a: &str, b: &str, c: &str| format!("+1 ({a}) {b}-{c}"),
            |a: &str, b: &str, c: &str| format!("+1-{a}-{b}-{c}"),
            |a: &str, b: &str, c: &str| format!("+1.{a}.{b}.{c}"),
            |a: &str, b: &str, c: &str| format!("+1-{a}-{b}{c}"),
            |a: &str, b: &str, c: &str| format!("+1 {a} {b} {c}"),
        ];
        // Every area code, with subscriber numbers valid and invalid in the regions of code 1
        // (`555-01xx` is reserved for fiction; `242`, `876`, `787`… belong to other regions).
        for area in 200..=999 {
            let area = area.to_string();
            for (exchange, line) in [("555", "0123"), ("234", "5678"), ("359", "1234")] {
                for spell in spellings {
                    let text = spell(&area, exchange, line);
                    let fast = nanp_e164(&text).expect("a ten-digit +1 number");
                    assert_eq!(fast, parsed(&text), "{text}");
                }
            }
        }
        // Anything else goes to the parser.
        for text in [
            "+1 155 012 3456",
            "+1 055 012 3456",
            "+1 555 012 345",
            "+1 555 012 34567",
            "+1 555 012 3456 x12",
            "+44 20 7946 0958",
            "+1/555/012/3456",
            "+12000000000-",
            "+1 555 012 3456.",
            "+1 555  012 3456",
            "+1 (555 012 3456",
            "+15550123456(",
            "+1200000-0000",
            "+1200-000-0000",
            "+1(200)000-0000",
        ] {
            assert_eq!(nanp_e164(text), None, "{text}");
        }
        assert_eq!(canonical_phone("001 555 012 3456", None), "+15550123456");
        assert_eq!(
            canonical_phone("+1 555 012 3456 x12", None),
            "+15550123456 x12"
        );
    }

    proptest::proptest! {
        #[test]
        fn the_usual_spellings_of_a_nanp_number_get_the_parsers_e164(
            text in "\\+1([-. ](\\([2-9][0-9]{2}\\)|[2-9][0-9]{2})[-. ]?[0-9]{3}[-. ]?|[2-9][0-9]{5})[0-9]{4}",
        ) {
            let fast = nanp_e164(&text);
            proptest::prop_assert!(fast.is_some(), "{}", text);
            proptest::prop_assert_eq!(fast.unwrap(), parsed(&text), "{}", text);
        }

        #[test]
        fn any_spelling_of_a_nanp_number_gets_the_parsers_e164(
            text in "\\+[-. ()]{0,2}1([-. ()]{0,2}[0-9]){10}[-. ()]{0,2}",
        ) {
            if let Some(fast) = nanp_e164(&text) {
                proptest::prop_assert_eq!(fast, parsed(text.trim()), "{}", text);
            }
        }
    }
}

//! Resource quantities (`100m`, `128Mi`, `1.5`, `2e3`) read as numbers, as the scheduler and
//! controllers need them. Mirrors `k8s.io/apimachinery/pkg/api/resource.Quantity` parsing;
//! leaves out canonical formatting and exact decimal arithmetic (an f64 is enough here).

/// The value of a quantity in base units (cores, bytes, pods), or `None` if it is not one.
pub fn parse(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * factor)
}

/// A quantity in thousandths, rounded up as upstream's `MilliValue` does (CPU in millicores).
pub fn milli(s: &str) -> Option<i64> {
    parse(s).map(|v| (v * 1000.0 - 1e-6).ceil() as i64)
}

/// A quantity as a whole number, rounded up as upstream's `Value` does (bytes, pods).
pub fn value(s: &str) -> Option<i64> {
    parse(s).map(|v| (v - 1e-9).ceil() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory() {
        assert_eq!(milli("100m"), Some(100));
        assert_eq!(milli("1.5"), Some(1500));
        assert_eq!(milli("2"), Some(2000));
        assert_eq!(value("128Mi"), Some(128 * 1024 * 1024));
        assert_eq!(value("1G"), Some(1_000_000_000));
        assert_eq!(value("2e3"), Some(2000));
        assert_eq!(value("110"), Some(110));
        assert_eq!(value("lots"), None);
        assert_eq!(value(""), None);
    }
}

/// Capsule's version: the one definition, printed by `capsule --version` and `capsule doctor`.
/// Change it here when a release is cut (README.md says so).
public enum CapsuleVersion {
    public static let current = "0.1.0"
}

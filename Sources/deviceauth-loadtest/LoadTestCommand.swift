import ArgumentParser

/// `deviceauth-loadtest`: argument parsing only; each mode lives in its own folder.
@main
struct LoadTestCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deviceauth-loadtest",
        abstract: "Load-test harness for the RFC 8628 device authorization server, with invariants and a report.",
        subcommands: [HTTPLoadCommand.self, StoreLoadCommand.self]
    )
}

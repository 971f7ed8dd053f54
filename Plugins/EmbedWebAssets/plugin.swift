import Foundation
import PackagePlugin

/// Compiles the package's `Web/` files (the reference chat page: HTML, CSS, JavaScript, SVG) into the target as
/// string literals (`BundledWebAssets.files`), so the binary serves its page wherever it is installed.
@main
struct EmbedWebAssets: BuildToolPlugin {
    static let extensions = [".html", ".css", ".js", ".svg"]

    func createBuildCommands(context: PluginContext, target: any Target) async throws -> [Command] {
        let folder = context.package.directoryURL.appending(path: "Web")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path(percentEncoded: false))) ?? []
        let inputs = names.filter { name in Self.extensions.contains { name.hasSuffix($0) } }.sorted()
            .map { folder.appending(path: $0) }
        let output = context.pluginWorkDirectoryURL.appending(path: "BundledWebAssets.swift")
        return [
            .buildCommand(
                displayName: "Embedding \(inputs.count) web asset(s)",
                executable: try context.tool(named: "EmbedMigrationsTool").url,
                arguments: ["--enum", "BundledWebAssets", "--field", "text", output.path(percentEncoded: false)]
                    + inputs.map { $0.path(percentEncoded: false) },
                inputFiles: inputs + [folder],
                outputFiles: [output]
            )
        ]
    }
}

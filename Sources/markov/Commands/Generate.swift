import ArgumentParser
import Foundation
import MarkovChains
import MarkovCore
import Redis

/// `markov generate --guild G`: sentences from a guild's chain, one Redis call each.
struct Generate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Generate sentences from a guild's chain.")

    @OptionGroup var options: GlobalOptions

    @Option(help: "The guild (Discord id).") var guild: String
    @Option(help: "Words to start from.") var seed: String?
    @Option(help: "Random seed: the same seed on the same chain gives the same sentence.") var rngSeed: UInt64?
    @Option(help: "How many sentences.") var count = 1
    @Option(help: "Most words in a sentence.") var maxWords = 60
    @Option(help: "Fewest words in a sentence.") var minWords = 1
    @Option(help: "Sentences tried before giving up.") var tries = 20
    @Flag(help: "Allow a sentence identical to a learnt message.") var allowCopies = false
    @Flag(help: "Show each step's token and probability, and the tries.") var debug = false

    func run() async throws {
        LoggingSetup.once
        let guild = try snowflake(self.guild, "--guild")
        let context = try await RoleContext(options: self.options, label: "markov.generate")
        defer { context.redis.shutdown() }
        try await context.store.prepare()
        var generationOptions = ChainStore.GenerationOptions()
        generationOptions.seedWords = Tokenizer.tokens(self.seed ?? "")
        generationOptions.maxWords = self.maxWords
        generationOptions.minWords = self.minWords
        generationOptions.maxTries = self.tries
        generationOptions.allowCopies = self.allowCopies
        generationOptions.debug = self.debug
        var failed = false
        for index in 0..<self.count {
            generationOptions.rngSeed = self.rngSeed.map { $0 &+ UInt64(index) } ?? UInt64.random(in: 0...UInt64.max)
            let result = try await context.store.generate(guild: guild, options: generationOptions)
            if self.debug {
                print("rng seed \(generationOptions.rngSeed); \(result.tries) tries; \(result.notes)")
                for step in result.steps {
                    let token = step.token.isEmpty ? "<end>" : step.token
                    print("  \(token)  \(step.count)/\(step.total) = \(String(format: "%.4f", step.probability))")
                }
            }
            if let sentence = result.sentence {
                print(sentence)
            } else {
                print("(no sentence: \(result.notes))")
                failed = true
            }
        }
        if failed { throw ExitCode(1) }
    }
}

// VS Code client for the schedc language server (`schedc lsp`, stdio).
//
// The server gives diagnostics (the same codes as `schedc check`), hover,
// completion, go-to-definition and formatting for `.sched` files. Highlighting
// comes from the TextMate grammars in ../syntaxes and works without it.
import * as vscode from "vscode";
import {
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  TransportKind,
} from "vscode-languageclient/node";

let client: LanguageClient | undefined;

function serverOptions(): ServerOptions {
  const config = vscode.workspace.getConfiguration("sched.server");
  const folder = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath ?? "";
  // Settings may name the project's own virtual environment: `${workspaceFolder}/.venv/bin/schedc`.
  const command = config.get<string>("path", "schedc").replace("${workspaceFolder}", folder);
  const args = config.get<string[]>("args", ["lsp"]);
  return { command, args, transport: TransportKind.stdio };
}

// Model checks import and run the Python file a `model` directive names: only in a trusted
// workspace, and only while the user leaves `sched.modelChecks` on. The server's default is off.
function modelChecks(): boolean {
  return vscode.workspace.isTrusted && vscode.workspace.getConfiguration("sched").get<boolean>("modelChecks", true);
}

async function start(context: vscode.ExtensionContext): Promise<void> {
  const clientOptions: LanguageClientOptions = {
    documentSelector: [{ scheme: "file", language: "sched" }, { scheme: "untitled", language: "sched" }],
    synchronize: { fileEvents: vscode.workspace.createFileSystemWatcher("**/*.{sched,py}") },
    initializationOptions: { modelChecks: modelChecks() },
  };
  client = new LanguageClient("sched", "Sched Language Server", serverOptions(), clientOptions);
  try {
    await client.start();
  } catch (err) {
    const path = vscode.workspace.getConfiguration("sched.server").get<string>("path", "schedc");
    void vscode.window.showErrorMessage(
      `Could not start the Sched language server (\`${path} lsp\`): ${err}. ` +
        "Install schedc with its `lsp` extra (pip install 'schedc[lsp]') or set `sched.server.path`.",
    );
  }
}

async function stop(): Promise<void> {
  if (client) {
    const running = client;
    client = undefined;
    await running.stop();
  }
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  context.subscriptions.push(
    vscode.commands.registerCommand("sched.restartServer", async () => {
      await stop();
      await start(context);
    }),
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (event.affectsConfiguration("sched.server") || event.affectsConfiguration("sched.modelChecks")) {
        await stop();
        await start(context);
      }
    }),
    // trusting the workspace turns model checks on: restart with the new initialization options
    vscode.workspace.onDidGrantWorkspaceTrust(async () => {
      await stop();
      await start(context);
    }),
  );
  await start(context);
}

export function deactivate(): Promise<void> | undefined {
  return client ? stop() : undefined;
}

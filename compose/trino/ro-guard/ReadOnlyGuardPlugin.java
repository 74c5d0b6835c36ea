package io.controlroom.trino;

import io.trino.spi.Plugin;
import io.trino.spi.security.AccessDeniedException;
import io.trino.spi.security.SystemAccessControl;
import io.trino.spi.security.SystemAccessControlFactory;
import io.trino.spi.security.SystemSecurityContext;

import java.lang.reflect.Method;
import java.lang.reflect.Proxy;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * Closes the gap Trino's file-based access control leaves: it never checks table procedures
 * (ALTER TABLE ... EXECUTE optimize | expire_snapshots | rollback_to_snapshot ...), which rewrite
 * or roll back data. Installed next to the file-based rules (access-control.config-files), this
 * control allows everything except table procedures for read-only identities ("<user>~ro"), so
 * every other decision stays with rules.json.
 */
public final class ReadOnlyGuardPlugin implements Plugin {
    static final String NAME = "controlroom-read-only-guard";
    static final String READ_ONLY_SUFFIX = "~ro";

    @Override
    public Iterable<SystemAccessControlFactory> getSystemAccessControlFactories() {
        return List.of(new SystemAccessControlFactory() {
            @Override
            public String getName() {
                return NAME;
            }

            @Override
            public SystemAccessControl create(Map<String, String> config, SystemAccessControlContext context) {
                return (SystemAccessControl) Proxy.newProxyInstance(
                        ReadOnlyGuardPlugin.class.getClassLoader(),
                        new Class<?>[] {SystemAccessControl.class},
                        (proxy, method, args) -> decide(method, args));
            }
        });
    }

    private static Object decide(Method method, Object[] args) {
        String name = method.getName();
        switch (name) {
            case "checkCanExecuteTableProcedure" -> {
                SystemSecurityContext context = (SystemSecurityContext) args[0];
                if (context.getIdentity().getUser().endsWith(READ_ONLY_SUFFIX)) {
                    throw new AccessDeniedException("Cannot execute table procedure " + args[2] + " on " + args[1]
                            + ": read-only identity");
                }
                return null;
            }
            case "getRowFilters", "getEventListeners" -> {
                return List.of();
            }
            case "getColumnMask" -> {
                return Optional.empty();
            }
            case "getColumnMasks" -> {
                return Map.of();
            }
            case "toString" -> {
                return NAME;
            }
            case "hashCode" -> {
                return System.identityHashCode(args == null ? NAME : args);
            }
            case "equals" -> {
                return false;
            }
            default -> {
                if (name.startsWith("checkCan") || name.equals("shutdown")) {
                    return null; // allowed here; the file-based rules decide
                }
                if (name.startsWith("can")) {
                    return true;
                }
                if (name.startsWith("filter")) {
                    return args[args.length - 1]; // nothing filtered here
                }
                throw new UnsupportedOperationException(NAME + " does not implement " + name);
            }
        }
    }
}
